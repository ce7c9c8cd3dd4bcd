"""The whole agent (``safeedge run`` in its own process, the tank-farm simulator, Debian's
Mosquitto) against a full disk and against power cuts.

- Full disk: the data directory is a small tmpfs that another file fills to the last block
  while the broker is down. The agent does not exit; alarms are stored; refused telemetry
  becomes a ``telemetry_refused`` event; when the broker is back everything stored goes out;
  when space returns telemetry is stored again.
- Power cut: the data directory is an ext4 image mounted through a loop device. Each round
  the agent runs and publishes, is frozen (SIGSTOP), the image is copied (what reached the
  "disk"), the agent is killed, the copy is put back and the agent restarts on it. The
  platform's view (a subscriber recording every message the broker accepted): no id ever
  arrives twice with different bodies, and every seq missing from a stream lies inside a
  ``seq_gap`` event.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from buffer import StoreReader, Stream
from provisioning.localbroker import free_port
from provisioning.simulator import tank_farm_config
from tests.conftest import BrokerFactory
from tests.support.mosquitto import Broker, Received, Subscriber
from tests.test_end_to_end import Agent, Simulator

pytestmark = pytest.mark.integration

SITE, GW = "DEMO", "GW1"


def mount(args: list[str], target: Path) -> None:
    done = subprocess.run(["mount", *args, str(target)], capture_output=True, check=False)
    assert done.returncode == 0, f"mount failed (the tests run as root): {done.stderr.decode()}"


def write_config(tmp_path: Path, data_dir: Path, broker: Broker, modbus_port: int) -> Path:
    text = tank_farm_config(
        modbus_host="127.0.0.1",
        modbus_port=modbus_port,
        mqtt_host=broker.host,
        mqtt_port=broker.port,
        data_dir=str(data_dir),
        site=SITE,
        gateway=GW,
        governance=False,  # plain JSON, every reading raw: the checks read payloads
    )
    text = text.replace('key_file = "buffer.key"\n', 'key_file = "buffer.key"\nreserve_mb = 1.0\n')
    text = text.replace("[uplink]\n", "[uplink]\nreconnect_min_s = 0.1\nreconnect_max_s = 0.5\n")
    config = tmp_path / "agent.toml"
    config.write_text(text)
    return config


def until(cond: Callable[[], bool], timeout_s: float, what: str, agent: Agent) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert agent.proc.poll() is None, f"the agent exited:\n{agent.log.read_text()[-4000:]}"
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{what} not within {timeout_s} s:\n{agent.log.read_text()[-3000:]}"
            )
        time.sleep(0.1)


def events(platform: Subscriber, kind: str) -> list[dict[str, object]]:
    out = []
    for m in list(platform.messages):
        if m.topic.endswith("/event"):
            body = json.loads(m.payload)["body"]
            if body["kind"] == kind:
                out.append(body)
    return out


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    sim = Simulator(4, free_port())  # the leak (alarms) starts a few seconds in
    yield sim
    sim.stop()


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "small"
    mnt.mkdir()
    mount(["-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs"], mnt)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(where: Path) -> Path:
    filler = where / "filler"
    try:
        with filler.open("wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    except OSError:
        pass
    return filler


def test_a_full_disk_with_the_broker_down_then_back_never_stops_the_agent(
    tmp_path: Path, make_broker: BrokerFactory, small_fs: Path, simulator: Simulator
) -> None:
    broker = make_broker()
    broker.kill()  # down from the start: everything waits in the buffer
    config = write_config(tmp_path, small_fs / "data", broker, simulator.port)
    agent = Agent(config, tmp_path / "agent.log")
    try:
        agent.wait_ready()
        filler = fill(small_fs)
        mark = len(agent.log.read_text())

        def logged_since_full(what: str) -> bool:
            return what in agent.log.read_text()[mark:]

        until(lambda: logged_since_full("append_failed"), 30, "a refused append", agent)
        until(lambda: logged_since_full("alarm tag="), 90, "an alarm on the full disk", agent)
        time.sleep(2)  # a few more polls on the full disk
        with StoreReader.open(
            path=small_fs / "data" / "buffer.db",
            key_file=small_fs / "data" / "buffer.key",
            gateway_id=GW,
        ) as reader:
            stored = reader.stats().streams
        assert stored[Stream.ALARM].undelivered >= 1, "no alarm was stored on the full disk"
        assert stored[Stream.TELEMETRY].refused >= 1
        # The platform must be subscribed before the agent can reconnect: the agent retries
        # every 0.1-0.5 s and drains its backlog within a second, faster than a subscriber
        # connects. It is paused (SIGSTOP) while the broker starts and the platform subscribes.
        agent.proc.send_signal(signal.SIGSTOP)
        try:
            platform_cm = Subscriber(broker_started(broker), "safeedge/v1/#")
        finally:
            agent.proc.send_signal(signal.SIGCONT)
        with platform_cm as platform:
            until(lambda: bool(events(platform, "telemetry_refused")), 30, "telemetry_refused",
                  agent)  # fmt: skip
            until(lambda: any(m.topic.endswith("/alarm") for m in platform.messages), 30,
                  "the stored alarms delivered", agent)  # fmt: skip
            refused = events(platform, "telemetry_refused")[0]
            assert refused["reason"] == "disk_full" and int(str(refused["count"])) >= 1
            filler.unlink()  # space returns
            since = time.time() * 1000

            def fresh_telemetry() -> bool:
                return any(
                    m.topic.endswith("/telemetry") and json.loads(m.payload)["ts"] > since
                    for m in list(platform.messages)
                )

            until(fresh_telemetry, 150, "telemetry stored again after space returned", agent)
        assert agent.proc.poll() is None
        assert agent.terminate() == 0
    finally:
        agent.kill()


def broker_started(broker: Broker) -> Broker:
    broker.start()
    return broker


@pytest.fixture
def ext4(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    image, mnt = tmp_path / "disk.img", tmp_path / "mnt"
    mnt.mkdir()
    with image.open("wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
    mount(["-o", "loop", str(image)], mnt)
    yield image, mnt
    subprocess.run(["umount", str(mnt)], check=False, capture_output=True)


def cut_power(agent: Agent, image: Path, mnt: Path) -> None:
    agent.proc.send_signal(signal.SIGSTOP)
    snapshot = image.with_name("snapshot.img")
    shutil.copyfile(image, snapshot)  # what reached the disk at the moment of the cut
    agent.proc.send_signal(signal.SIGKILL)
    agent.proc.wait()
    subprocess.run(["umount", str(mnt)], check=True, capture_output=True)
    snapshot.replace(image)
    mount(["-o", "loop", str(image)], mnt)


def check_platform_view(messages: list[Received]) -> dict[str, int]:
    """No id with two bodies; every missing seq inside a seq_gap. Returns seqs per stream."""
    bodies: dict[str, bytes] = {}
    seqs: dict[str, set[int]] = {"alarm": set(), "event": set(), "telemetry": set()}
    gaps: list[tuple[str, int, int]] = []
    for m in messages:
        stream = m.topic.rsplit("/", 1)[1]
        if stream not in seqs:
            continue
        env = json.loads(m.payload)
        body = json.dumps(env["body"], sort_keys=True).encode()
        assert bodies.setdefault(env["id"], body) == body, f"{env['id']} arrived with two bodies"
        seqs[stream].add(env["seq"])
        if stream == "event" and env["body"]["kind"] == "seq_gap":
            b = env["body"]
            gaps.append((b["stream"], b["from_seq"], b["to_seq"]))
    for stream, got in seqs.items():
        for q in range(1, max(got, default=0) + 1):
            if q not in got:
                assert any(
                    s == stream and lo <= q <= hi for s, lo, hi in gaps
                ), f"{stream} seq {q} never arrived and no seq_gap covers it"
    return {s: len(v) for s, v in seqs.items()}


def run_power_cuts(
    tmp_path: Path, broker: Broker, simulator: Simulator, image: Path, mnt: Path, rounds: int
) -> None:
    rng = random.Random(77)
    config = write_config(tmp_path, mnt / "data", broker, simulator.port)
    with Subscriber(broker, "safeedge/v1/#") as platform:
        for round_no in range(rounds):
            agent = Agent(config, tmp_path / f"agent{round_no}.log")
            try:
                agent.wait_ready()
                time.sleep(rng.uniform(1.5, 4.0))
            finally:
                if agent.proc.poll() is None:
                    cut_power(agent, image, mnt)
        agent = Agent(config, tmp_path / "agent-final.log")
        try:
            agent.wait_ready()
            time.sleep(5)  # drain what the cuts left behind
            assert agent.terminate() == 0
        finally:
            agent.kill()
        time.sleep(0.5)
        counts = check_platform_view(list(platform.messages))
    assert counts["telemetry"] > 0 and counts["event"] > rounds
    assert events(platform, "seq_gap"), "power cuts yet no seq_gap event"
    assert os.path.exists(mnt / "data" / "buffer.db.ledger")


def test_power_cuts_of_the_whole_agent_never_reuse_an_id_and_explain_every_gap(
    tmp_path: Path, broker: Broker, simulator: Simulator, ext4: tuple[Path, Path]
) -> None:
    run_power_cuts(tmp_path, broker, simulator, *ext4, rounds=3)


@pytest.mark.slow
@pytest.mark.soak
@pytest.mark.timeout(900)
def test_twenty_power_cuts_of_the_whole_agent(
    tmp_path: Path, broker: Broker, simulator: Simulator, ext4: tuple[Path, Path]
) -> None:
    run_power_cuts(tmp_path, broker, simulator, *ext4, rounds=20)


def test_a_database_damaged_while_the_agent_was_stopped_is_salvaged_and_reported(
    tmp_path: Path, broker: Broker, simulator: Simulator
) -> None:
    config = write_config(tmp_path, tmp_path / "data", broker, simulator.port)
    with Subscriber(broker, "safeedge/v1/#") as platform:
        broker.pause()  # the first run's records stay undelivered in the buffer
        agent = Agent(config, tmp_path / "agent1.log")
        try:
            agent.wait_ready()
            time.sleep(2.5)
            broker.resume()
            time.sleep(0.3)
            broker.pause()  # some delivered, then the link hangs again
            assert agent.terminate() == 0
        finally:
            agent.kill()
            broker.resume()
        db = tmp_path / "data" / "buffer.db"
        data = bytearray(db.read_bytes())
        for page in range(4, len(data) // 4096, 3):
            data[page * 4096 : page * 4096 + 32] = b"\xee" * 32
        db.write_bytes(bytes(data))
        agent = Agent(config, tmp_path / "agent2.log")
        try:
            agent.wait_ready()
            until(lambda: bool(events(platform, "buffer_corrupt")), 30, "buffer_corrupt", agent)
            time.sleep(2)
            assert agent.terminate() == 0
        finally:
            agent.kill()
        time.sleep(0.3)
        (corrupt,) = events(platform, "buffer_corrupt")
        assert str(corrupt["moved_to"]).startswith(str(db) + ".corrupt-")
        assert int(str(corrupt["salvaged"])) + int(str(corrupt["delivered_kept"])) > 0
        check_platform_view(list(platform.messages))  # no id reused, every gap explained
