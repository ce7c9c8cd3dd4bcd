"""The walking skeleton end to end: simulated PLC → agent process → real Mosquitto → platform.

Real peers only: the tank-farm simulator (a pymodbus TCP server) and the agent run as their own
processes (``safeedge simulate`` / ``safeedge run``), the broker is Debian's Mosquitto, and the
platform side is a paho subscriber / the shipped listener.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.uplink.encoding import decode_payload
from buffer import Store
from buffer.record import Stream
from central.listen import Listener, Message
from provisioning.localbroker import free_port
from provisioning.simulator import tank_farm_config
from tests.support.mosquitto import Broker, Received, Subscriber
from tests.support.telemetry import points_of

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SITE, GW = "DEMO", "GW1"
ROOT = f"safeedge/v1/{SITE}/{GW}"
ENVELOPE_KEYS = ["v", "site", "gw", "stream", "seq", "id", "ts", "backfill", "body"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".cache/numba"))
    return env


class Simulator:
    """``safeedge simulate`` in its own process at 3x speed."""

    def __init__(self, leak_start_s: float, port: int) -> None:
        self.port = port
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agent",
                "simulate",
                "--port",
                str(self.port),
                "--time-scale",
                "3",
                "--leak-start-s",
                str(leak_start_s),
                "--seed",
                "7",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=_env(),
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                    self.proc.kill()
                    raise AssertionError(f"simulator did not start: {err}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


@pytest.fixture
def start_simulator() -> Iterator[Callable[..., Simulator]]:
    sims: list[Simulator] = []

    def start(leak_start_s: float, *, port: int) -> Simulator:
        sims.append(Simulator(leak_start_s, port))
        return sims[-1]

    yield start
    for sim in sims:
        sim.stop()


class Agent:
    def __init__(self, config: Path, log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent", "run", "--config", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=_env(),
            )

    def wait_ready(self, timeout_s: float = 90) -> None:
        """Until the agent reports ready (config, kernels, store and devices up)."""
        deadline = time.monotonic() + timeout_s
        while " ready " not in self.log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"agent not ready:\n{self.log.read_text()}")
            time.sleep(0.1)

    def terminate(self, timeout_s: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout_s)
        return int(self.proc.returncode)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


AgentFactory = Callable[..., tuple[Agent, Path]]


@pytest.fixture
def agent_factory(tmp_path: Path) -> Iterator[AgentFactory]:
    agents: list[Agent] = []

    def make(
        modbus_port: int, broker: Broker, uplink_extra: str = "", poll_s: float = 1.0
    ) -> tuple[Agent, Path]:
        data_dir = tmp_path / "data"
        config = tmp_path / "agent.toml"
        text = tank_farm_config(
            modbus_host="127.0.0.1",
            modbus_port=modbus_port,
            mqtt_host=broker.host,
            mqtt_port=broker.port,
            data_dir=str(data_dir),
            site=SITE,
            gateway=GW,
        )
        text = text.replace("[uplink]\n", f"[uplink]\n{uplink_extra}\n", 1)
        text = text.replace(
            "poll_interval_s = 1.0\ntimeout_s = 0.5",
            f"poll_interval_s = {poll_s}\ntimeout_s = {min(0.5, poll_s * 0.8)}",
        )
        config.write_text(text)
        agent = Agent(config, tmp_path / "agent.log")
        agents.append(agent)
        return agent, data_dir

    yield make
    for agent in agents:
        agent.kill()


def _doc(m: Received) -> dict[str, Any]:
    """An enveloped message as JSON (the shipped demo config compresses them)."""
    doc: dict[str, Any] = json.loads(decode_payload(m.payload))
    return doc


def _alarm(m: Received, event: str, level: int) -> bool:
    if not m.topic.endswith("/alarm"):
        return False
    body = _doc(m)["body"]
    return (body["tag"], body["alarm"], body["event"], body["level"]) == (
        "GT-102",
        "high",
        event,
        level,
    )


def test_a_leak_raises_level_1_then_level_2_alarms_that_reach_the_platform_in_the_envelope(
    broker: Broker, start_simulator: Callable[..., Simulator], agent_factory: AgentFactory
) -> None:
    modbus_port = free_port()
    with Subscriber(broker, "safeedge/v1/#") as platform:
        agent, _ = agent_factory(modbus_port, broker)
        agent.wait_ready()
        # The PLC comes up after the agent (the agent must cope); the leak starts 2 s later.
        start_simulator(6, port=modbus_port)
        try:
            state = platform.wait_for(lambda m: m.topic == f"{ROOT}/state", timeout_s=60)
            assert json.loads(state.payload)["online"] is True

            raised = platform.wait_for(lambda m: _alarm(m, "raise", 1), timeout_s=60)
            escalated = platform.wait_for(lambda m: _alarm(m, "escalate", 2), timeout_s=30)
        except AssertionError:
            raise AssertionError(agent.log.read_text()) from None

        for msg, level, limit, severity in (
            (raised, 1, 25, "major"),
            (escalated, 2, 50, "critical"),
        ):
            env = _doc(msg)
            assert list(env) == ENVELOPE_KEYS
            assert env["v"] == 1 and env["site"] == SITE and env["gw"] == GW
            assert env["stream"] == "alarm"
            assert env["id"] == f"{GW}/alarm/{env['seq']}"
            assert isinstance(env["ts"], int) and env["backfill"] is False
            body = env["body"]
            assert body["alarm"] == "high" and body["level"] == level
            assert body["limit"] == limit and body["severity"] == severity
            assert body["value"] >= limit
            assert body["alarm_id"].startswith(f"{GW}:GT-102:high:")
        raise_env, esc_env = _doc(raised), _doc(escalated)
        assert esc_env["seq"] > raise_env["seq"]
        assert esc_env["body"]["alarm_id"] == raise_env["body"]["alarm_id"]

        telemetry = platform.wait_for(lambda m: m.topic == f"{ROOT}/telemetry")
        assert telemetry.payload[0] == 0x78  # the shipped demo policy compresses (zlib)
        tele = _doc(telemetry)
        assert tele["v"] == 2
        # Gas is sent raw; temperatures, pressures and levels only as 1-minute statistics.
        names = {p[0] for p in points_of(tele["body"])} if "at" in tele["body"] else set()
        assert names >= {"GT-101", "GT-102"}, tele
        assert not names & {"TT-101", "PT-101", "LT-101"}

        with Subscriber(broker, f"{ROOT}/state") as late_joiner:
            online = late_joiner.wait_for(lambda m: True)
        assert online.retain
        assert json.loads(online.payload)["online"] is True

        assert agent.terminate() == 0
        platform.wait_for(
            lambda m: m.topic == f"{ROOT}/state" and not json.loads(m.payload)["online"]
        )
        with Subscriber(broker, f"{ROOT}/state") as late_joiner:
            offline = late_joiner.wait_for(lambda m: True)
        assert offline.retain
        assert json.loads(offline.payload)["online"] is False


class Platform:
    """The central platform in the outage tests: a Mosquitto with persistence and a listener
    with a persistent session, so nothing is lost on *their* side across broker restarts."""

    def __init__(self, directory: Path) -> None:
        self.broker = Broker(
            directory,
            extra_config=["persistence true", f"persistence_location {directory}/"],
        )
        self.broker.start()
        self.received: dict[str, set[int]] = {"telemetry": set(), "alarm": set(), "event": set()}
        self.delivered: list[str] = []
        self.backfilled: set[str] = set()
        self.listener = Listener(
            host=self.broker.host,
            port=self.broker.port,
            on_message=self._on_message,
            client_id="test-platform",
            session_expiry_s=600,
        )
        self.listener.start()

    def _on_message(self, m: Message) -> None:
        if m.envelope is not None:
            self.received[m.envelope.stream].add(m.envelope.seq)
            self.delivered.append(m.envelope.id)
            if m.envelope.backfill:
                self.backfilled.add(m.envelope.stream)

    def close(self) -> None:
        self.listener.stop()
        self.broker.kill()


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    p = Platform(tmp_path / "broker")
    yield p
    p.close()


def test_a_ten_second_broker_outage_loses_no_telemetry_or_alarm_seq(
    platform: Platform, start_simulator: Callable[..., Simulator], agent_factory: AgentFactory
) -> None:
    received, broker = platform.received, platform.broker
    modbus_port = free_port()
    # Records older than 3 s when published are flagged as backfill (default 10 s).
    agent, data_dir = agent_factory(modbus_port, broker, "backfill_after_s = 3.0")
    agent.wait_ready()
    # The leak (scenario t=20 s, 7 s real) crosses both limits while the broker is down.
    start_simulator(20, port=modbus_port)
    _wait(lambda: len(received["telemetry"]) >= 3, 60, "first telemetry", agent)
    broker.stop()
    time.sleep(10)
    broker.start()
    seen_before = max(received["telemetry"])
    _wait(
        lambda: len(received["telemetry"]) >= seen_before + 12 and received["alarm"],
        60,
        "telemetry and alarms after the outage",
        agent,
    )
    assert agent.terminate() == 0
    time.sleep(0.5)

    _assert_every_seq_arrived(data_dir, received)
    assert "telemetry" in platform.backfilled  # readings held during the outage are flagged


def _assert_every_seq_arrived(data_dir: Path, received: dict[str, set[int]]) -> None:
    """Every seq the agent ever assigned (read from its own buffer) reached the platform."""
    with Store.open(
        path=data_dir / "buffer.db", key_file=data_dir / "buffer.key", gateway_id=GW
    ) as store:
        stats = store.stats()
    for stream in (Stream.TELEMETRY, Stream.ALARM, Stream.EVENT):
        s = stats.streams[stream]
        assert s.undelivered == 0, (stream, s)
        expected = set(range(1, s.last_seq + 1))
        missing = expected - received[stream.wire_name]
        assert not missing, (stream, sorted(missing)[:20])
        assert received[stream.wire_name] == expected


def test_repeated_broker_restarts_under_load_lose_nothing_and_duplicates_are_removed(
    platform: Platform, start_simulator: Callable[..., Simulator], agent_factory: AgentFactory
) -> None:
    received, broker = platform.received, platform.broker
    modbus_port = free_port()
    agent, data_dir = agent_factory(modbus_port, broker, poll_s=0.1)  # 10 polls/s
    agent.wait_ready()
    start_simulator(10, port=modbus_port)
    _wait(lambda: len(received["telemetry"]) >= 20, 60, "first telemetry", agent)
    for outage_s in (1.0, 3.0, 0.2, 2.0):
        broker.stop()
        time.sleep(outage_s)
        broker.start()
        target = max(received["telemetry"]) + 20
        _wait(lambda t=target: max(received["telemetry"]) >= t, 60, "recovery", agent)
    assert agent.terminate() == 0
    time.sleep(0.5)

    _assert_every_seq_arrived(data_dir, received)
    assert len(platform.delivered) == len(set(platform.delivered))  # each id passed on once
    assert received["alarm"]


def _wait(cond: Callable[[], object], timeout_s: float, what: str, agent: Agent) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{agent.log.read_text()}")
        time.sleep(0.1)
