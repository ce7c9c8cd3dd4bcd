"""Uplink throughput: buffer → forwarder → Mosquitto → subscriber, against a bare paho publisher.

Prints one table. Baseline and forwarder run ``--rounds`` times, interleaved (baseline, forwarder,
baseline, ...), and the best round of each is quoted, with every round's ratio below it: on a
small shared machine one slow round says more about the neighbours than about the code. Both
runs use the same broker, the same QoS 1 in-flight window and the same
envelope bytes; the baseline is a bare paho client publishing those bytes as fast as its window
allows (no store, no encryption, no acknowledgement bookkeeping). Figures are quoted as ratios
against it, plus:

- the CPU time per message of the publishing process (paho's thread included) in both runs,
  which neighbours on a shared machine disturb far less than the wall-clock rates;
- readings/s and messages/s delivered from an encrypted buffer holding a backlog to a
  subscriber (the drain after an outage);
- the time to drain one hour of backlog of ``--tags`` tags sampled every second, extrapolated
  from the measured drain rate when ``--drain-fraction`` < 1 (said so in the table);
- MQTT bytes on the wire per reading at ``--tags`` tags × 1 s with 8-character names, body v1
  and body v2 side by side, plain and zlib (PUBLISH packets as MQTT 5 encodes them, with the
  content-type property, from the agent's own shaping and encoding: benchmarks/uplink_sizes.py);
- the demo site (provisioning.simulator) for ``--demo-seconds``: bytes per hour with its shipped
  data policy against body v1 sending every reading raw.

The drain carries body ``--body`` (default 2) under ``--compression`` (default zlib): the
forwarder compresses every envelope, the bare paho baseline publishes the plain ones.

Usage: ``python benchmarks/bench_uplink.py [--tags 1000] [--points 1000] [--messages 2000]
[--rounds 3] [--demo-seconds 3600]``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.codec import encode_envelope
from agent.codec_v2 import body_version
from agent.config import UplinkConfig
from agent.forwarder import Forwarder
from agent.uplink import Uplink
from buffer import Store
from buffer.record import Stream
from provisioning.localbroker import LocalBroker, find_mosquitto
from provisioning.simulator import tank_farm_config

sys.path.insert(0, str(Path(__file__).parent))  # run as a script: its sibling module
from uplink_sizes import (
    demo_site_bytes,
    fleet_bodies,
    fleet_site_bytes,
)

SITE, GW = "CN-JS-0042", "tank-farm-gw1"
TOPIC = f"safeedge/v1/{SITE}/{GW}/telemetry"
T0 = 1_764_300_000_000


def bodies(n_messages: int, points: int, tags: int, body: int) -> list[bytes]:
    """Telemetry bodies as the agent makes them: ``tags`` tags polled every second (one
    timestamp per poll), ``points`` readings per record at most (uplink_sizes.fleet_bodies)."""
    out: list[bytes] = []
    polls = -(-n_messages * points // tags) + 1
    for records in fleet_bodies(tags=tags, polls=polls, body=body, batch=points):
        out += records
        if len(out) >= n_messages:
            break
    return out[:n_messages]


def envelope(seq: int, body: bytes) -> bytes:
    return encode_envelope(
        site=SITE, gateway=GW, stream="telemetry", seq=seq, ts_ms=T0, backfill=True, body=body,
        v=body_version("telemetry", body),
    )  # fmt: skip


def _count_messages(port: int, commands: Connection, results: Connection) -> None:
    """Subscriber process: count telemetry messages; report when the expected number arrived."""
    lock = threading.Lock()
    state = {"n": 0, "target": 0}
    ready = threading.Event()
    c = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5
    )
    c.on_subscribe = lambda *a: ready.set()

    def on_message(client: object, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with lock:
            state["n"] += 1
            if state["target"] and state["n"] >= state["target"]:
                state["target"] = 0
                results.send(state["n"])

    c.on_message = on_message
    c.connect("127.0.0.1", port)
    c.subscribe(f"safeedge/v1/{SITE}/{GW}/#", qos=1)
    c.loop_start()
    results.send("ready" if ready.wait(5) else "not subscribed")
    while (target := commands.recv()) is not None:
        with lock:
            state["n"], state["target"] = 0, target
        results.send("armed")  # the publisher starts only now: no message counted before
    c.disconnect()
    c.loop_stop()


class Counter:
    """A subscriber counting messages on the gateway's topics, in its own process: the platform
    is never inside the gateway's process, and a subscriber thread here would compete with the
    code measured for the interpreter lock (skewing both runs, the busier one more)."""

    def __init__(self, port: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._commands, their_commands = ctx.Pipe(duplex=False)[::-1]
        their_results, self._results = ctx.Pipe(duplex=False)[::-1]
        self._proc = ctx.Process(
            target=_count_messages, args=(port, their_commands, their_results), daemon=True
        )
        self._proc.start()
        if not self._results.poll(30) or self._results.recv() != "ready":
            self._proc.kill()
            raise RuntimeError("subscriber could not subscribe")
        self.target = 0

    def expect(self, n: int) -> None:
        """Count from zero up to ``n``; returns once the subscriber has reset its count (a
        message published before that would be counted in the previous round's total, and the
        round would wait for one that never comes)."""
        self.target = n
        self._commands.send(n)
        if not self._results.poll(30) or self._results.recv() != "armed":
            raise RuntimeError("subscriber did not arm its counter")

    def wait(self, timeout_s: float) -> bool:
        if not self._results.poll(timeout_s):
            return False
        self._results.recv()
        return True

    def close(self) -> None:
        self._commands.send(None)
        self._proc.join(5)
        if self._proc.is_alive():
            self._proc.kill()


def bare_paho(port: int, payloads: list[bytes], inflight: int, sub: Counter) -> tuple[float, float]:
    """(wall, CPU) seconds for a bare paho QoS 1 client to publish everything and the
    subscriber to get it; CPU is this process's (paho's network thread included)."""
    c = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5
    )
    c.max_inflight_messages_set(inflight)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    sub.expect(len(payloads))
    t0, c0 = time.perf_counter(), time.process_time()
    window = threading.Semaphore(inflight)  # never queue more than the window inside paho

    def release(*a: object) -> None:
        window.release()

    c.on_publish = release
    for p in payloads:
        window.acquire()
        c.publish(TOPIC, p, qos=1)
    if not sub.wait(120):
        raise RuntimeError(f"baseline: the subscriber did not get {len(payloads)} messages")
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    c.disconnect()
    c.loop_stop()
    return elapsed, cpu


def forwarder_drain(
    port: int,
    data_dir: Path,
    raw_bodies: list[bytes],
    inflight: int,
    sub: Counter,
    compression: str,
) -> tuple[float, float, float]:
    """(append seconds, drain seconds, drain CPU seconds of this process) of the backlog
    through the real store and forwarder."""
    store = Store.open(path=data_dir / "buffer.db", key_file=data_dir / "buffer.key", gateway_id=GW)
    t0 = time.perf_counter()
    for i in range(0, len(raw_bodies), 500):
        store.append(Stream.TELEMETRY, raw_bodies[i : i + 500], created_ms=T0)
    appended = time.perf_counter() - t0
    elapsed, cpu = asyncio.run(
        _drain_on_the_loop(port, store, len(raw_bodies), inflight, sub, compression)
    )
    store.close()
    return appended, elapsed, cpu


async def _drain_on_the_loop(
    port: int, store: Store, n: int, inflight: int, sub: Counter, compression: str
) -> tuple[float, float]:
    """As the agent runs it: uplink and forwarder on one event loop, PUBACKs wake the forwarder."""
    fwd: Forwarder | None = None

    def wake() -> None:
        if fwd is not None:
            fwd.wake()

    up = Uplink(
        config=UplinkConfig(
            host="127.0.0.1",
            port=port,
            max_inflight=inflight,
            compression=compression,  # type: ignore[arg-type]
        ),
        site=SITE,
        gateway=GW,
        agent_version="bench",
        on_results=wake,
    )
    fwd = Forwarder(
        store=store, uplink=up, site=SITE, gateway=GW, backfill_after_s=10,
        max_inflight=inflight, clock_ms=lambda: time.time_ns() // 1_000_000,
    )  # fmt: skip
    up.start()
    while not up.connected:  # noqa: ASYNC110 - a benchmark's set-up, not a code path
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    sub.expect(n)
    t0, c0 = time.perf_counter(), time.process_time()
    task = asyncio.create_task(fwd.run())
    fwd.wake()
    if not await asyncio.to_thread(sub.wait, 120):
        raise RuntimeError(f"forwarder: the subscriber did not get {n} messages")
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    while fwd.stats.delivered < n:  # noqa: ASYNC110 - the last PUBACKs may trail the subscriber
        await asyncio.sleep(0.005)
    task.cancel()
    await up.stop(timeout_s=2)
    return elapsed, cpu


def _demo_config(*, body: int, governance: bool) -> str:
    text = tank_farm_config(
        modbus_host="127.0.0.1", modbus_port=5020, mqtt_host="127.0.0.1", mqtt_port=1883,
        data_dir="/nonexistent", governance=governance,
    )  # fmt: skip
    return text.replace("[uplink]\n", f"[uplink]\ntelemetry_body = {body}\n", 1)


def size_rows(tags: int, demo_seconds: int) -> list[tuple[str, str, str, str]]:
    """Bytes per reading (v1 / v2 / v2 + zlib) and the demo site's bytes per hour."""
    polls = 5
    v1 = fleet_site_bytes(tags=tags, polls=polls, body=1, compression="none", batch=tags)
    v2 = fleet_site_bytes(tags=tags, polls=polls, body=2, compression="none", batch=tags)
    vz = fleet_site_bytes(tags=tags, polls=polls, body=2, compression="zlib", batch=tags)
    v1z = fleet_site_bytes(tags=tags, polls=polls, body=1, compression="zlib", batch=tags)
    raw = demo_site_bytes(_demo_config(body=1, governance=False), seconds=demo_seconds,
                          compression="none")  # fmt: skip
    shipped = demo_site_bytes(_demo_config(body=2, governance=True), seconds=demo_seconds,
                              compression="zlib")  # fmt: skip
    per_h = 3600 / demo_seconds

    def smaller(x: float, target: str = "") -> str:
        return f"{v1.per_reading / x:.2f}× smaller" + (f"  (target {target})" if target else "")

    kb_h = [b.wire_bytes * per_h / 1e3 for b in (raw, shipped)]
    return [
        ("bytes on the wire per reading: body v1", f"{v1.per_reading:.1f} B",
         f"{tags:,} tags × 1 s, 8-char names, 1 msg/poll", "1.00"),
        ("  body v1 + zlib", f"{v1z.per_reading:.1f} B", "", smaller(v1z.per_reading)),
        ("  body v2", f"{v2.per_reading:.1f} B", "", smaller(v2.per_reading, "≤ 16 B")),
        ("  body v2 + zlib", f"{vz.per_reading:.1f} B", "", smaller(vz.per_reading, "≤ 6 B")),
        ("demo site, body v1, every reading raw", f"{kb_h[0]:,.0f} kB/h",
         f"{raw.messages * per_h:,.0f} msg/h", "1.00"),
        ("demo site, shipped policy (v2, stats, zlib)", f"{kb_h[1]:,.0f} kB/h",
         f"{shipped.messages * per_h:,.0f} msg/h",
         f"{raw.wire_bytes / shipped.wire_bytes:.1f}× less  (target ≥ 5×)"),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tags", type=int, default=1000, help="tags sampled every second")
    ap.add_argument(
        "--points", type=int, default=1000, help="readings per message (telemetry_batch)"
    )
    ap.add_argument(
        "--messages", type=int, default=2000, help="messages measured (a fraction of the hour)"
    )
    ap.add_argument("--inflight", type=int, default=100)
    ap.add_argument(
        "--rounds", type=int, default=3, help="interleaved baseline/forwarder rounds (best of)"
    )
    ap.add_argument("--body", type=int, choices=(1, 2), default=2, help="telemetry body drained")
    ap.add_argument("--compression", choices=("none", "zlib"), default="zlib")
    ap.add_argument(
        "--demo-seconds", type=int, default=3600, help="demo site seconds simulated (bytes/h)"
    )
    args = ap.parse_args(argv)
    binary = find_mosquitto()
    if binary is None:
        print("mosquitto not found (apt install mosquitto)", file=sys.stderr)
        return 1
    raw = bodies(args.messages, args.points, args.tags, args.body)
    payloads = [envelope(i + 1, b) for i, b in enumerate(raw)]
    readings = args.messages * args.points
    hour_readings = args.tags * 3600
    with tempfile.TemporaryDirectory() as tmp:
        broker = LocalBroker(Path(tmp) / "broker", binary=binary)
        with broker.conf_file.open("a") as conf:  # a subscriber queue that never drops QoS 1
            conf.write("max_queued_messages 0\nmax_queued_bytes 0\n")
        broker.start()
        base_runs: list[float] = []
        drain_runs: list[float] = []
        append_runs: list[float] = []
        base_cpu: list[float] = []
        drain_cpu: list[float] = []
        try:
            sub = Counter(broker.port)
            for r in range(args.rounds):  # interleaved: both see the same machine load
                wall_s, cpu_s = bare_paho(broker.port, payloads, args.inflight, sub)
                base_runs.append(wall_s)
                base_cpu.append(cpu_s)
                append_s, drain_s, cpu_s = forwarder_drain(
                    broker.port, Path(tmp) / f"data{r}", raw, args.inflight, sub, args.compression
                )
                append_runs.append(append_s)
                drain_runs.append(drain_s)
                drain_cpu.append(cpu_s)
            sub.close()
        finally:
            broker.stop()
    base_s, drain_s, append_s = min(base_runs), min(drain_runs), min(append_runs)
    fraction = readings / hour_readings
    hour_s = drain_s / fraction
    base_rate, fwd_rate = args.messages / base_s, args.messages / drain_s
    enc = f"body v{args.body}" + (", zlib" if args.compression == "zlib" else "")
    rows = [
        (
            "bare paho QoS 1 publisher (baseline)",
            f"{base_rate:,.0f} msg/s",
            f"{base_rate * args.points:,.0f} readings/s",
            "1.00  (plain envelopes)",
        ),
        (
            f"buffer → forwarder → subscriber ({enc})",
            f"{fwd_rate:,.0f} msg/s",
            f"{fwd_rate * args.points:,.0f} readings/s",
            f"{fwd_rate / base_rate:.2f}  (target ≥ 0.70)",
        ),
        (
            "  per round (forwarder / baseline)",
            " ".join(f"{b / d:.2f}" for b, d in zip(base_runs, drain_runs, strict=True)),
            "",
            f"worst {min(b / d for b, d in zip(base_runs, drain_runs, strict=True)):.2f}",
        ),
        (
            "  CPU per message in the publishing process",
            f"{min(drain_cpu) / args.messages * 1e6:,.0f} µs",
            f"baseline {min(base_cpu) / args.messages * 1e6:,.0f} µs",
            f"{min(base_cpu) / min(drain_cpu):.2f}  (baseline / forwarder, best rounds)",
        ),
        (
            "append backlog to the encrypted buffer",
            f"{args.messages / append_s:,.0f} msg/s",
            f"{readings / append_s:,.0f} readings/s",
            "(not a ratio)",
        ),
        (
            f"drain 1 h of {args.tags:,} tags at 1 s ({hour_readings / 1e6:.1f} M readings)",
            f"{hour_s:,.1f} s",
            "measured" if fraction >= 1 else f"extrapolated from {fraction:.0%}",
            "target ≤ 300 s",
        ),
        *size_rows(args.tags, args.demo_seconds),
    ]
    print(
        f"bench_uplink: {platform.node()} · {platform.machine()} · {os.cpu_count()} CPUs · "
        f"Python {platform.python_version()} · {platform.platform()}"
    )
    print(
        f"{args.messages:,} messages × {args.points} readings ({enc}), in-flight window "
        f"{args.inflight}, Mosquitto on loopback; best of {args.rounds} interleaved rounds; "
        f"readings: ¼ digital 0/1, ¾ analog 0–100 at one decimal; demo site over "
        f"{args.demo_seconds} s"
    )
    widths = [max(len(str(r[i])) for r in rows) for i in range(4)]
    header = ("what", "rate / size", "", "ratio vs baseline")
    widths = [max(w, len(h)) for w, h in zip(widths, header, strict=True)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
