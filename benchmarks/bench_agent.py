"""End-to-end agent benchmark: the real agent process against a floor doing only the same I/O.

For each site (N tags on M devices, 1 Hz polling, a rule on every tag, sealed buffer, uplink to a
real Mosquitto) it starts, on loopback:

- a PLC process: a minimal raw Modbus TCP server (FC03/FC04, no pymodbus, so its own CPU stays
  out of the way) with one endpoint per device, values that change every second, and a count of
  every request with its arrival time (requests per cycle and poll jitter are measured here, from
  outside the agent);
- a Mosquitto broker and a subscriber in this process that timestamps every telemetry message
  (read → arrival latency: arrival minus the reading's ``ts``, same clock);
- the agent, ``python -m agent run``, as its own process; after a warm-up, a steady window in
  which its CPU (every thread's time on a CPU in nanoseconds, /proc/<pid>/task/*/schedstat),
  RSS high-water mark and context switches (all threads) are read;
- beside it, the **floor**, on PLC endpoints and a topic of its own, same broker: a minimal
  Python loop doing only the same I/O — pymodbus reads of the same blocks every second and paho
  QoS 1 publishes of one v1-shaped JSON payload per device poll; no rules, no buffer, no
  envelope. Both are measured over the same window (a machine that slows down slows both; one
  after the other, the floor alone moved by a third between runs), and the agent's overhead
  is its ratio to the floor.

An ``idle`` site (one device due once an hour) measures wakeups per second with nothing to do.

Usage: ``python benchmarks/bench_agent.py [--sites 1x100 1x1000 10x100 10x1000 40x250 idle]
[--window-s 20] [--warmup-s 6] [--rounds 1] [--kernels native|jit]``. Prints a table and the
machine it ran on; with ``--rounds`` also the median agent/floor ratio per site.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import platform
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.mosquitto import Broker, free_port  # noqa: E402

MAX_BLOCK = 125
CLK_TCK = os.sysconf("SC_CLK_TCK")


def machine() -> str:
    model = platform.machine()
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


# -- the PLC: raw Modbus TCP, one endpoint per device --------------------------------------


def _register(addr: int, now_s: int) -> int:
    return (addr * 13 + now_s) % 500 + 100  # changes every second, never near a limit


async def _plc_main(ports: list[int], stats_file: Path) -> None:
    arrivals: dict[int, list[float]] = {p: [] for p in ports}

    def serve(port: int):  # type: ignore[no-untyped-def]
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    head = await reader.readexactly(7)
                    tid, _pid, length, unit = struct.unpack(">HHHB", head)
                    pdu = await reader.readexactly(length - 1)
                    arrivals[port].append(time.monotonic())
                    fc = pdu[0]
                    if fc in (3, 4) and len(pdu) == 5:
                        addr, count = struct.unpack(">HH", pdu[1:5])
                        now_s = int(time.time())
                        regs = [_register(addr + i, now_s) for i in range(count)]
                        body = bytes([fc, 2 * count]) + struct.pack(f">{count}H", *regs)
                    else:
                        body = bytes([fc | 0x80, 1])  # illegal function
                    writer.write(struct.pack(">HHHB", tid, 0, len(body) + 1, unit) + body)
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()

        return handle

    servers = [await asyncio.start_server(serve(p), "127.0.0.1", p) for p in ports]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("plc ready", flush=True)
    await stop.wait()
    for s in servers:
        s.close()
    stats_file.write_text(json.dumps({str(p): a for p, a in arrivals.items()}))


# -- the floor: the same I/O, nothing else -------------------------------------------------


async def _floor_main(ports: list[int], tags: int, broker_port: int, topic: str) -> None:
    import paho.mqtt.client as mqtt
    from pymodbus.client import AsyncModbusTcpClient

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", broker_port)
    client.loop_start()
    modbus = []
    for p in ports:
        c = AsyncModbusTcpClient("127.0.0.1", port=p, timeout=1)
        await c.connect()
        modbus.append(c)
    names = [[f"D{d:02d}T{i:04d}" for i in range(tags)] for d in range(len(ports))]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("floor ready", flush=True)
    nxt = time.monotonic()
    while not stop.is_set():
        for d, c in enumerate(modbus):
            values: list[int] = []
            for start in range(0, tags, MAX_BLOCK):
                rr = await c.read_holding_registers(start, count=min(MAX_BLOCK, tags - start))
                values += rr.registers
            ts = time.time_ns() // 1_000_000
            points = [[n, ts, v] for n, v in zip(names[d], values, strict=True)]
            client.publish(topic, json.dumps({"points": points}).encode(), qos=1)
        nxt += 1.0
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, nxt - time.monotonic()))
    client.loop_stop()


# -- the agent's config ----------------------------------------------------------------------


def agent_config(
    directory: Path, ports: list[int], tags: int, broker_port: int, period_s: float
) -> Path:
    lines = [
        '[gateway]\nsite = "BENCH"\nid = "GW1"\ndata_dir = "data"\n',
        f'[uplink]\nhost = "127.0.0.1"\nport = {broker_port}\n'
        + (
            f"telemetry_batch = {os.environ['BENCH_TELEMETRY_BATCH']}\n"
            if os.environ.get("BENCH_TELEMETRY_BATCH")
            else ""
        ),
        '[buffer]\npath = "buffer.db"\nkey_file = "buffer.key"\n',
    ]
    for d, port in enumerate(ports):
        lines.append(
            f'[[devices]]\ndriver = "modbus_tcp"\nname = "plc{d:02d}"\nhost = "127.0.0.1"\n'
            f"port = {port}\nunit_id = 1\npoll_interval_s = {period_s}\ntimeout_s = 0.5\n"
        )
        for i in range(tags):
            lines.append(
                f'[[devices.tags]]\nname = "D{d:02d}T{i:04d}"\ntable = "holding"\n'
                f'address = {i}\ntype = "uint16"\n'
            )
    lines.append('[[rules]]\nmatch = "*"\nhigh = 9000.0\nhigh_high = 9500.0\ndeadband = 1.0\n')
    if os.environ.get("BENCH_NO_RECORDER"):  # to see what the incident recorder's rings cost
        lines.append("[review.recorder]\nenabled = false\n")
    path = directory / "agent.toml"
    path.write_text("\n".join(lines))
    return path


# -- measuring a process from /proc ----------------------------------------------------------


@dataclass
class Sample:
    t: float
    ticks_s: float  # utime + stime of the whole process (ended threads too), in clock ticks
    run_ns: dict[int, int]  # per live thread: time on a CPU (schedstat), in nanoseconds
    switches: int


def cpu_between(a: Sample, b: Sample) -> float:
    """CPU seconds used between two samples. From the threads' schedstat (nanoseconds; a 60 s
    window at 0.5 % of a core is only ~30 clock ticks, so ticks alone carry a 3 % rounding
    error each end) when every thread of the first sample is still there; a thread that ended
    in between took its time with it, and then the process's tick count is used."""
    if a.run_ns and b.run_ns and a.run_ns.keys() <= b.run_ns.keys():
        return sum(ns - a.run_ns.get(tid, 0) for tid, ns in b.run_ns.items()) / 1e9
    return b.ticks_s - a.ticks_s


def sample(pid: int) -> Sample:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = (int(fields[11]) + int(fields[12])) / CLK_TCK
    switches = 0
    run_ns: dict[int, int] = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt", "nonvoluntary_ctxt")):
                        switches += int(line.split()[1])
            with open(f"/proc/{pid}/task/{task}/schedstat", encoding="ascii") as f:
                run_ns[int(task)] = int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that ended between listdir and open
    return Sample(time.monotonic(), ticks, run_ns, switches)


def vm_mb(pid: int) -> tuple[float, float]:
    """(VmHWM, RssAnon) in MB. The high-water mark counts the pages of mapped files too
    (libllvmlite.so alone is 170 MB), and how many of those are resident depends on the page
    cache (two copies of one venv differed by 30 MB); RssAnon is the process's own memory."""
    found = {"VmHWM": math.nan, "RssAnon": math.nan}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            key = line.split(":", 1)[0]
            if key in found:
                found[key] = int(line.split()[1]) / 1024
    return found["VmHWM"], found["RssAnon"]


class Arrivals:
    """Subscriber: read → arrival latency of every telemetry reading (v1 and v2 bodies)."""

    def __init__(self, broker: Broker, topic: str) -> None:
        import paho.mqtt.client as mqtt

        self.latencies_ms: list[float] = []
        self.messages = 0
        self.recording = False
        self._lock = threading.Lock()
        self._c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self._c.on_message = self._on_message
        self._c.connect(broker.host, broker.port)
        self._c.subscribe(topic, qos=1)
        self._c.loop_start()

    def _on_message(self, _c: object, _u: object, msg: object) -> None:
        now = time.time_ns() / 1e6
        raw: bytes = msg.payload  # type: ignore[attr-defined]
        if raw[:1] == b"\x78":
            raw = zlib.decompress(raw)
        doc = json.loads(raw)
        body = doc.get("body", doc)
        stamps: list[float] = []
        if "points" in body:
            stamps = [p[1] for p in body["points"]]
        elif "at" in body:
            stamps = [body["t0"] + g[0] for g in body["at"] for _ in g[1]]
        with self._lock:
            self.messages += 1
            if self.recording and not doc.get("backfill"):
                self.latencies_ms += [now - s for s in stamps]

    def close(self) -> None:
        self._c.loop_stop()
        self._c.disconnect()


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return math.nan
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


@dataclass
class Result:
    cpu_pct: float
    rss_mb: float
    anon_mb: float
    wakeups_s: float
    lat_p50: float
    lat_p95: float
    requests_per_cycle: float
    jitter_p95_pct: float


def _wait_line(proc: subprocess.Popen[str], text: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if text in line:
            return
        if proc.poll() is not None:
            raise RuntimeError(f"process exited {proc.returncode} before {text!r}")
    raise RuntimeError(f"no {text!r} within {timeout_s} s")


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _distinct_ports(n: int) -> list[int]:
    """``n`` different free ports (the kernel may hand one out twice in a row: 80 draws for
    40 devices and their floor once gave a duplicate, and the PLC could not bind)."""
    ports: list[int] = []
    while len(ports) < n:
        p = free_port()
        if p not in ports:
            ports.append(p)
    return ports


def run_site(
    devices: int, tags: int, *, period_s: float, warmup_s: float, window_s: float, tmp: Path
) -> tuple[Result, Result | None]:
    """The agent and the floor run side by side, each on its own PLC endpoints and topic, and
    are measured over the same window: a machine that slows down (other work, a noisy
    neighbour on a VM) slows both, so their ratio stays put where one after the other it
    moved by a third between runs."""
    floor_on = period_s < 60
    drawn = _distinct_ports(2 * devices if floor_on else devices)
    ports, floor_ports = drawn[:devices], drawn[devices:]
    stats_file = tmp / "plc.json"
    plc = subprocess.Popen(
        [sys.executable, __file__, "--plc", str(stats_file), *map(str, ports + floor_ports)],
        stdout=subprocess.PIPE,
        text=True,
    )
    _wait_line(plc, "plc ready")
    broker = Broker(tmp / "broker")
    broker.start()
    topic = "safeedge/v1/BENCH/GW1/telemetry"
    floor_topic = "bench/floor/telemetry"
    arrivals = Arrivals(broker, topic)
    floor_arrivals = Arrivals(broker, floor_topic) if floor_on else None
    cfg = agent_config(tmp, ports, tags, broker.port, period_s)
    env = {
        **os.environ,
        "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", "") or str(REPO / ".cache/numba"),
    }
    agent = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(cfg), "--log-level", "WARNING"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp,
    )
    floor: subprocess.Popen[str] | None = None
    floor_result = None
    try:
        deadline = time.monotonic() + 90
        while arrivals.messages == 0 and floor_on:
            if agent.poll() is not None or time.monotonic() > deadline:
                out = agent.stdout.read() if agent.stdout else ""
                raise RuntimeError(f"agent produced no telemetry: {out[-2000:]}")
            time.sleep(0.05)
        if floor_arrivals is not None:
            floor = subprocess.Popen(
                [sys.executable, __file__, "--floor", str(tags), str(broker.port), floor_topic,
                 *map(str, floor_ports)],
                stdout=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            _wait_line(floor, "floor ready")
        time.sleep(warmup_s)
        for a in (arrivals, floor_arrivals):
            if a is not None:
                a.recording = True
        t_window = time.monotonic()
        a0 = sample(agent.pid)
        f0 = sample(floor.pid) if floor is not None else None
        time.sleep(window_s)
        a1 = sample(agent.pid)
        f1 = sample(floor.pid) if floor is not None else None
        t_end = time.monotonic()
        for a in (arrivals, floor_arrivals):
            if a is not None:
                a.recording = False
        dt = a1.t - a0.t
        cpu, rss, wake = (
            100 * cpu_between(a0, a1) / dt,
            vm_mb(agent.pid),
            (a1.switches - a0.switches) / dt,
        )
        lat = list(arrivals.latencies_ms)
        if floor is not None and f0 is not None and f1 is not None:
            assert floor_arrivals is not None
            fdt = f1.t - f0.t
            f_lat = list(floor_arrivals.latencies_ms)
            floor_result = Result(
                100 * cpu_between(f0, f1) / fdt, *vm_mb(floor.pid),
                (f1.switches - f0.switches) / fdt, pct(f_lat, 0.5), pct(f_lat, 0.95),
                math.nan, math.nan,
            )  # fmt: skip
        agent_window = (t_window, t_end)
    finally:
        for proc in (agent, floor):
            if proc is not None and proc.poll() is None:
                stop(proc)
        for a in (arrivals, floor_arrivals):
            if a is not None:
                a.close()
        broker.kill()
        plc.send_signal(signal.SIGTERM)
        plc.wait(10)
    agent_ports = set(ports)
    stamps = {
        int(p): a for p, a in json.loads(stats_file.read_text()).items() if int(p) in agent_ports
    }
    requests = 0
    jitter: list[float] = []
    lo, hi = agent_window
    for a in stamps.values():
        inside = [t for t in a if lo <= t <= hi]
        requests += len(inside)
        # a cycle's first request: the first after a pause longer than half the period
        starts = [t for i, t in enumerate(inside) if i == 0 or t - inside[i - 1] > period_s / 2]
        jitter += [abs((b - a) - period_s) / period_s * 100 for a, b in itertools.pairwise(starts)]
    cycles = (hi - lo) / period_s
    result = Result(
        cpu,
        *rss,
        wake,
        pct(lat, 0.5),
        pct(lat, 0.95),
        requests / cycles if period_s < 60 else 0.0,
        pct(jitter, 0.95),
    )
    return result, floor_result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--sites", nargs="+", default=["1x100", "1x1000", "10x100", "10x1000", "40x250", "idle"]
    )
    ap.add_argument("--window-s", type=float, default=20.0)
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run each site this many times (a row each); then the median agent/floor ratio",
    )
    ap.add_argument("--warmup-s", type=float, default=6.0)
    ap.add_argument(
        "--kernels",
        choices=("native", "jit"),
        default="native",
        help="the agent's kernels: the native modules of warm-cache (as installed) or numba's JIT",
    )
    args = ap.parse_args()
    cache = os.environ.get("NUMBA_CACHE_DIR", "") or str(REPO / ".cache/numba")
    warm = [sys.executable, "-m", "agent", "warm-cache", "--cache-dir", cache]
    warm += ["--require-native"] if args.kernels == "native" else ["--no-native"]
    subprocess.run(warm, check=True, capture_output=True, cwd=REPO)
    os.environ["SAFEEDGE_KERNELS"] = args.kernels  # the agent's environment is built from ours
    print(f"machine: {machine()}")
    print(f"kernels: {args.kernels} (SAFEEDGE_KERNELS; warm-cache ran first, as install.sh does)")
    print(f"steady window {args.window_s:.0f} s after {args.warmup_s:.0f} s warm-up; 1 Hz polling")
    head = (
        "| site | agent CPU % | floor CPU % | agent/floor | agent RSS MB (anon) | floor RSS MB "
        "| wakeups/s (floor) | latency p50/p95 ms (floor) | requests/cycle (optimum) "
        "| jitter p95 % |"
    )
    print(head)
    print("|---" * 10 + "|")
    ratios: dict[str, list[float]] = {}
    for site in [s for s in args.sites for _ in range(max(1, args.rounds))]:
        with tempfile.TemporaryDirectory(prefix="bench-agent-") as d:
            if site == "idle":
                devices, tags, period = 1, 10, 3600.0
            else:
                devices, tags = (int(x) for x in site.split("x"))
                period = 1.0
            r, f = run_site(
                devices,
                tags,
                period_s=period,
                warmup_s=args.warmup_s,
                window_s=args.window_s,
                tmp=Path(d),
            )
            optimum = devices * math.ceil(tags / MAX_BLOCK)
            if f is None:
                print(
                    f"| idle (1×10, due hourly) | {r.cpu_pct:.2f} | – | – "
                    f"| {r.rss_mb:.0f} ({r.anon_mb:.0f}) | – "
                    f"| {r.wakeups_s:.1f} | – | – | – |"
                )
                continue
            print(
                f"| {devices}×{tags} | {r.cpu_pct:.2f} | {f.cpu_pct:.2f} "
                f"| {r.cpu_pct / f.cpu_pct if f.cpu_pct else math.nan:.2f} "
                f"| {r.rss_mb:.0f} ({r.anon_mb:.0f}) "
                f"| {f.rss_mb:.0f} | {r.wakeups_s:.1f} ({f.wakeups_s:.1f}) "
                f"| {r.lat_p50:.1f}/{r.lat_p95:.1f} ({f.lat_p50:.1f}/{f.lat_p95:.1f}) "
                f"| {r.requests_per_cycle:.2f} ({optimum}) | {r.jitter_p95_pct:.2f} |",
                flush=True,
            )
            if f.cpu_pct:
                ratios.setdefault(f"{devices}×{tags}", []).append(r.cpu_pct / f.cpu_pct)
    for name, rs in ratios.items():
        if len(rs) > 1:
            print(
                f"{name}: agent/floor median {statistics.median(rs):.2f} over {len(rs)} rounds "
                f"(range {min(rs):.2f}–{max(rs):.2f})"
            )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--plc":
        asyncio.run(_plc_main([int(p) for p in sys.argv[3:]], Path(sys.argv[2])))
    elif len(sys.argv) > 1 and sys.argv[1] == "--floor":
        asyncio.run(
            _floor_main(
                [int(p) for p in sys.argv[5:]], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
            )
        )
    else:
        main()
