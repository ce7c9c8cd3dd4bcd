"""Signed commands: verification rules without I/O, then the running agent against a real broker.

The platform side is the shipped tool (``central.cmd_sign``): its keys, its signing, its
publisher. The agent is a real :class:`Pipeline` polling the tank-farm simulator (a pymodbus
server) and talking to a real Mosquitto.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.codec import decode_alarm, decode_cmd_result, decode_envelope, decode_state
from agent.commands import (
    WINDOW_MS,
    AckAlarmArgs,
    CommandProcessor,
    CommandRejectedError,
    ReplayStore,
    ResendArgs,
    sign_command,
)
from agent.config import loads_config, resolved_paths
from agent.pipeline import Pipeline, wall_clock_ms
from central.cmd_sign import build_payload, keygen, load_private_key, publish_command
from central.listen import Listener
from central.schema import SchemaValidator
from provisioning.localbroker import free_port
from provisioning.simulator import TankFarmSimulator, tank_farm_config
from tests.support.mosquitto import Broker, Received, Subscriber

NOW = 1_764_300_000_000
KID = "platform-2026"
T = TypeVar("T")


class Actions:
    """Handlers that record what they were asked to do (the processor is the code under test)."""

    def __init__(self) -> None:
        self.done: list[str] = []

    def ack_alarm(self, args: AckAlarmArgs) -> str:
        self.done.append(f"ack {args.tag}")
        return "acked"

    def rebirth(self) -> str:
        self.done.append("rebirth")
        return "reborn"

    def resend(self, args: ResendArgs) -> str:
        self.done.append(f"resend {args.stream} {args.from_seq}..{args.to_seq}")
        return "queued"


def processor(tmp_path: Path, key: Ed25519PrivateKey, actions: Actions) -> CommandProcessor:
    replay = ReplayStore(tmp_path / "seen.json", max_ids=100, clock_ms=lambda: NOW)
    return CommandProcessor(
        gateway="G1",
        trusted_keys={KID: key.public_key()},
        replay=replay,
        handlers=actions,
        clock_ms=lambda: NOW,
    )


def cmd(cmd: str = "ping", **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"id": str(uuid.uuid4()), "ts": NOW, "gw": "G1", "cmd": cmd, "args": {}}
    return {**base, **over}


# -- sans-I/O ----------------------------------------------------------------------------------


def test_a_signed_ping_is_answered_ok_and_its_id_is_remembered(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    proc = processor(tmp_path, key, Actions())
    c = cmd()
    result = proc.handle(sign_command(key, KID, c))
    assert (result.id, result.status, result.detail, result.ts) == (c["id"], "ok", "pong", NOW)
    again = proc.handle(sign_command(key, KID, c))
    assert (again.status, again.reason) == ("rejected", "replayed")
    assert ReplayStore(tmp_path / "seen.json", max_ids=100, clock_ms=lambda: NOW).floor_ts == 0
    assert c["id"] in ReplayStore(tmp_path / "seen.json", max_ids=100, clock_ms=lambda: NOW)


def test_the_window_is_300_seconds_either_way_of_the_gateway_clock(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    proc = processor(tmp_path, key, Actions())
    for ts, status in [
        (NOW - WINDOW_MS, "ok"),
        (NOW + WINDOW_MS, "ok"),
        (NOW - WINDOW_MS - 1, "rejected"),
        (NOW + WINDOW_MS + 1, "rejected"),
    ]:
        assert proc.handle(sign_command(key, KID, cmd(ts=ts))).status == status, ts


def test_a_payload_altered_after_signing_fails_verification(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    actions = Actions()
    proc = processor(tmp_path, key, actions)
    signed = msgspec.json.decode(sign_command(key, KID, cmd("ack_alarm", args={"tag": "A"})))
    forged = base64.b64decode(signed["payload"]).replace(b'"A"', b'"B"')
    signed["payload"] = base64.b64encode(forged).decode()
    result = proc.handle(msgspec.json.encode(signed))
    assert (result.status, result.reason) == ("rejected", "bad_signature")
    assert actions.done == []


def test_a_resend_range_that_runs_backwards_is_rejected_as_bad_args(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    proc = processor(tmp_path, key, Actions())
    args = {"stream": "alarm", "from_seq": 5, "to_seq": 4}
    assert proc.handle(sign_command(key, KID, cmd("resend", args=args))).reason == "bad_args"


@settings(max_examples=300, deadline=None)
@given(raw=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)))
def test_no_input_bytes_crash_the_processor_or_get_accepted(raw: bytes) -> None:
    key = Ed25519PrivateKey.generate()
    replay = ReplayStore(Path("/nonexistent/never-written.json"), max_ids=100, clock_ms=lambda: NOW)
    proc = CommandProcessor(
        gateway="G1", trusted_keys={KID: key.public_key()}, replay=replay,
        handlers=Actions(), clock_ms=lambda: NOW,
    )  # fmt: skip
    result = proc.handle(raw)
    assert result.status == "rejected"
    assert msgspec.json.decode(result.payload())["status"] == "rejected"


def test_a_full_replay_store_forgets_expired_ids_but_never_ids_inside_the_window(
    tmp_path: Path,
) -> None:
    now = [NOW]
    store = ReplayStore(tmp_path / "seen.json", max_ids=100, clock_ms=lambda: now[0])
    for i in range(100):
        store.add(f"old-{i}", NOW)
    with pytest.raises(CommandRejectedError) as info:
        store.check("new", NOW)
    assert info.value.reason == "replay_store_full"
    now[0] = NOW + WINDOW_MS + 1
    store.check("new", now[0])  # the old ids are outside the window now: forgotten
    assert len(store) == 0


def test_a_corrupt_replay_file_is_moved_aside_and_older_commands_count_as_replayed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "seen.json"
    path.write_text("{not json")
    store = ReplayStore(path, max_ids=100, clock_ms=lambda: NOW)
    assert path.with_name("seen.json.corrupt").exists()
    with pytest.raises(CommandRejectedError, match="replayed"):
        store.check("any", NOW - 1)
    store.check("any", NOW)


# -- the running agent against a real broker ----------------------------------------------------


class Agent:
    """A Pipeline and the tank-farm simulator on their own event loop thread."""

    def __init__(self, tmp: Path, broker: Broker, public_key: str) -> None:
        modbus_port = free_port()
        path = tmp / "agent.toml"
        text = tank_farm_config(
            modbus_host="127.0.0.1",
            modbus_port=modbus_port,
            mqtt_host=broker.host,
            mqtt_port=broker.port,
            data_dir=str(tmp / "data"),
            site="S1",
            gateway="G1",
            governance=False,  # plain JSON, every tag raw: these tests read payloads directly
        )
        text += f'\n[commands]\ntrusted_keys = {{ "{KID}" = "{public_key}" }}\nmax_resend = 50\n'
        path.write_text(text)
        cfg = loads_config(text, source=str(path))
        self.pipeline = Pipeline(cfg, resolved_paths(cfg, path), flush_timeout_s=0.5)
        self._modbus_port = modbus_port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._thread.start()
        if not self._ready.wait(60) or self._error is not None:
            raise AssertionError(f"agent not ready: {self._error!r}")

    def _main(self) -> None:
        async def run() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            sim = TankFarmSimulator(
                port=self._modbus_port, time_scale=2.0, leak_start_s=4.0, seed=5
            )
            async with sim:
                task = asyncio.create_task(self.pipeline.run(self._stop))
                await self.pipeline.ready.wait()
                self._ready.set()
                await task

        try:
            asyncio.run(run())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the agent's loop thread (the store and engine live there)."""
        assert self._loop is not None

        async def call() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(10)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = Broker(tmp_path_factory.mktemp("broker"))
    b.start()
    yield b
    b.kill()


@pytest.fixture(scope="module")
def platform_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Ed25519PrivateKey, str]:
    path, public = keygen(KID, tmp_path_factory.mktemp("keys"))
    return load_private_key(path), public


@pytest.fixture(scope="module")
def capture(broker: Broker) -> Iterator[Subscriber]:
    """Everything on the broker from before the agent starts (for the schema check)."""
    with Subscriber(broker, "#") as sub:
        yield sub


@pytest.fixture(scope="module")
def agent(
    tmp_path_factory: pytest.TempPathFactory,
    broker: Broker,
    platform_key: tuple[Ed25519PrivateKey, str],
    capture: Subscriber,
) -> Iterator[Agent]:
    a = Agent(tmp_path_factory.mktemp("agent"), broker, platform_key[1])
    up = a.pipeline.uplink
    assert up is not None
    for _ in range(1000):
        if up.connected:
            break
        threading.Event().wait(0.01)
    assert up.connected, "the agent's uplink did not connect within 10 s"
    yield a
    a.stop()


@pytest.fixture
def platform(broker: Broker, agent: Agent) -> Iterator[Subscriber]:
    with Subscriber(broker, "safeedge/v1/S1/G1/#") as sub:
        yield sub


ROOT = "safeedge/v1/S1/G1"


def after(sub: Subscriber, n: int, pred: Callable[[Received], bool]) -> Callable[[Received], bool]:
    """``pred``, for messages received after the first ``n`` only."""
    return lambda m: pred(m) and any(x is m for x in sub.messages[n:])


def send(broker: Broker, message: bytes) -> dict[str, Any]:
    answer = publish_command(
        host=broker.host, port=broker.port, root=ROOT, message=message, wait_s=5
    )
    assert answer is not None, "no cmd/result"
    return msgspec.structs.asdict(decode_cmd_result(answer))


def signed(key: Ed25519PrivateKey, **over: Any) -> tuple[bytes, str]:
    payload = build_payload({"gw": "G1", "cmd": "ping", **over}, ts_ms=wall_clock_ms())
    return sign_command(key, KID, payload), payload["id"]


def _tampered(key: Ed25519PrivateKey) -> tuple[bytes, str | None]:
    msg, cid = signed(key)
    doc = msgspec.json.decode(msg)
    doc["sig"] = base64.b64encode(Ed25519PrivateKey.generate().sign(b"x")).decode()
    return msgspec.json.encode(doc), cid


def _replayed(key: Ed25519PrivateKey, broker: Broker) -> tuple[bytes, str | None]:
    msg, cid = signed(key)
    assert send(broker, msg)["status"] == "ok"
    return msg, cid


CASES: dict[str, Callable[[Ed25519PrivateKey, Broker], tuple[bytes, str | None]]] = {
    "malformed": lambda k, b: (b"\xff not json", None),
    "unsigned": lambda k, b: (msgspec.json.encode({"id": "u1", "cmd": "ping", "gw": "G1"}), "u1"),
    "unknown_key": lambda k, b: (
        sign_command(Ed25519PrivateKey.generate(), "someone", {"id": "k1", "gw": "G1"}),
        "k1",
    ),
    "bad_signature": lambda k, b: _tampered(k),
    "foreign_gateway": lambda k, b: signed(k, gw="G2"),
    "expired": lambda k, b: (
        sign_command(k, KID, {**build_payload({"gw": "G1", "cmd": "ping"}, ts_ms=1), "ts": 1}),
        None,
    ),
    "unknown_command": lambda k, b: signed(k, cmd="reboot"),
    "bad_args": lambda k, b: signed(k, cmd="ack_alarm", args={"tag": "NO-SUCH-TAG"}),
    "replayed": _replayed,
}


@pytest.mark.integration
@pytest.mark.parametrize("reason", list(CASES))
def test_each_bad_command_is_rejected_with_its_reason_and_counted(
    reason: str, agent: Agent, broker: Broker, platform_key: tuple[Ed25519PrivateKey, str]
) -> None:
    key = platform_key[0]
    message, command_id = CASES[reason](key, broker)
    before = agent.call(lambda: dict(agent.pipeline.commands.rejected))  # type: ignore[union-attr]
    answer = send(broker, message)
    assert answer["status"] == "rejected"
    assert answer["detail"].startswith(f"{reason}: ")
    if command_id is not None:
        assert answer["id"] == command_id
    after = agent.call(lambda: dict(agent.pipeline.commands.rejected))  # type: ignore[union-attr]
    assert after[reason] == before[reason] + 1


@pytest.mark.integration
def test_ack_alarm_acknowledges_a_raised_alarm_and_the_ack_record_reaches_the_platform(
    agent: Agent, broker: Broker, platform: Subscriber, platform_key: tuple[Ed25519PrivateKey, str]
) -> None:
    def gt102_high(event: str) -> Callable[[Received], bool]:
        def match(m: Received) -> bool:
            if m.topic != f"{ROOT}/alarm":
                return False
            body = decode_alarm(decode_envelope(m.payload).body)
            return (body.tag, body.alarm, body.event) == ("GT-102", "high", event)

        return match

    platform.wait_for(gt102_high("raise"), timeout_s=40)
    message, command_id = signed(
        platform_key[0], cmd="ack_alarm", args={"tag": "GT-102", "alarm": "high", "user": "li.wei"}
    )
    answer = send(broker, message)
    assert (answer["id"], answer["status"]) == (command_id, "ok")
    assert "high ack" in answer["detail"]
    ack = decode_alarm(decode_envelope(platform.wait_for(gt102_high("ack")).payload).body)
    assert ack.level >= 1
    assert ack.extra["user"] == "li.wei"


@pytest.mark.integration
def test_rebirth_republishes_state_and_meta(
    agent: Agent, broker: Broker, platform: Subscriber, platform_key: tuple[Ed25519PrivateKey, str]
) -> None:
    platform.wait_for(lambda m: m.topic == f"{ROOT}/meta" and m.retain)
    n = len(platform.messages)
    answer = send(broker, signed(platform_key[0], cmd="rebirth")[0])
    assert answer["status"] == "ok"
    state = platform.wait_for(after(platform, n, lambda m: m.topic == f"{ROOT}/state"))
    assert decode_state(state.payload).online
    platform.wait_for(after(platform, n, lambda m: m.topic == f"{ROOT}/meta"))


@pytest.mark.integration
def test_resend_republishes_retained_records_with_their_original_ids(
    agent: Agent, broker: Broker, platform: Subscriber, platform_key: tuple[Ed25519PrivateKey, str]
) -> None:
    platform.wait_for(
        lambda m: m.topic == f"{ROOT}/telemetry" and decode_envelope(m.payload).seq >= 3, 10
    )
    args = {"stream": "telemetry", "from_seq": 1, "to_seq": 3}
    n = len(platform.messages)
    answer = send(broker, signed(platform_key[0], cmd="resend", args=args)[0])
    assert (answer["status"], answer["detail"]) == ("ok", "3 telemetry records queued for resend")

    def telemetry_seq(seq: int) -> Callable[[Received], bool]:
        return lambda m: m.topic == f"{ROOT}/telemetry" and decode_envelope(m.payload).seq == seq

    for seq in (1, 2, 3):
        m = platform.wait_for(after(platform, n, telemetry_seq(seq)))
        env = decode_envelope(m.payload)
        assert env.id == f"G1/telemetry/{seq}"
    too_many = {"stream": "telemetry", "from_seq": 1, "to_seq": 51}
    refused = send(broker, signed(platform_key[0], cmd="resend", args=too_many)[0])
    assert refused["detail"].startswith("bad_args: ")


@pytest.mark.integration
def test_every_message_of_the_agent_run_matches_the_published_json_schemas(
    agent: Agent,
    broker: Broker,
    capture: Subscriber,
    platform_key: tuple[Ed25519PrivateKey, str],
) -> None:
    seen: list[str] = []
    start = len(capture.messages)  # earlier tests sent deliberately broken commands
    with Listener(
        host=broker.host, port=broker.port, on_message=lambda m: seen.append(m.kind), validate=True
    ) as listener:
        send(broker, signed(platform_key[0], cmd="ping")[0])
        send(broker, signed(platform_key[0], gw="G9")[0])
        capture.wait_for(lambda m: m.topic == f"{ROOT}/alarm", timeout_s=40)
        capture.wait_for(lambda m: m.topic == f"{ROOT}/event")
        deadline = time.monotonic() + 5
        while "telemetry" not in seen and time.monotonic() < deadline:
            time.sleep(0.05)
        validator = SchemaValidator()
        kinds: set[str] = set()
        for i, m in enumerate(capture.messages):
            kind = m.topic[len(ROOT) + 1 :]
            if kind == "cmd" and i < start:
                continue
            kinds.add(kind)
            assert validator.errors(kind, m.payload) == [], (m.topic, m.payload[:300])
        assert listener.stats.invalid == 0
    expected = {"state", "meta", "telemetry", "alarm", "event", "cmd", "cmd/result"}
    assert expected <= kinds
    assert {"state", "meta", "telemetry", "cmd", "cmd/result"} <= set(seen)
