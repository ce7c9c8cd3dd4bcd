"""Driver benchmark: request coalescing, agent CPU per sample, isolation of a silent device.

Prints one table per question, the machine it ran on, and a baseline measured in the same run:

1. Modbus TCP, 1,000 and 10,000 tags on a simulated PLC (a pymodbus server in ANOTHER process,
   so the agent's CPU time is its own): requests per poll cycle for the planned reads, for one
   request per tag, and the optimum (an independent dynamic program); agent CPU seconds per
   10,000 samples, planned vs one request per tag (the baseline).
2. p95 poll-period jitter of healthy TCP devices (one bus each, scheduled like the agent's
   pipeline: one task per bus, missed slots skipped) with and without a silent device on another
   endpoint (the baseline is "without").
3. Modbus RTU, 8 unit ids on one line (socat pty pair, pymodbus serial server in another
   process): requests per cycle, planned vs one per tag vs optimum, and the cycle time.
4-6. Faults (:mod:`bench_faults`): requests per cycle on hole maps (overlapping tags too) vs
   the optimum, re-plan after a transient refusal, recovery time vs its bound (Modbus TCP and a
   serial-line device).

Usage: ``python benchmarks/bench_drivers.py [--tags 1000 10000] [--cycles 20] [--jitter-s 10]
[--random-maps 20] [--refusal-s 2] [--outage-s 6] [--recovery-periods 0.5 1]``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_faults import bench_recovery, bench_refusals, bench_serial_recovery, bench_transient

from drivers import ModbusDevice, PlannedPoint, ReadRequest, build_device
from drivers.codec import word_count
from drivers.config import (
    DataType,
    ModbusRtuDeviceConfig,
    ModbusTcpDeviceConfig,
    SerialPortConfig,
    TagConfig,
)

MAX_REGISTERS, MAX_GAP = 125, 10
TYPES: tuple[DataType, ...] = ("uint16", "uint16", "int16", "float32", "uint32")


def machine() -> str:
    model = platform.processor() or platform.machine()
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


LAYOUTS = {
    "dense": "a dense PLC map: 90 % of tags follow the previous one directly, "
    "10 % after a hole of 1-3 registers (<= max_gap)",
    "sparse": "a sparse map: 70 % contiguous, 20 % after 1-3 spare registers, "
    "10 % after a hole of 15-40 registers (> max_gap: a new request)",
}


def layout(n: int, seed: int, prefix: str = "t", kind: str = "sparse") -> list[TagConfig]:
    """``n`` holding-register tags in address order, types drawn from TYPES, holes per
    ``LAYOUTS[kind]``."""
    rng = random.Random(seed)
    tags, cursor = [], 0
    for i in range(n):
        r = rng.random()
        if kind == "dense":
            gap = 0 if r < 0.9 else rng.randint(1, 3)
        else:
            gap = 0 if r < 0.7 else rng.randint(1, 3) if r < 0.9 else rng.randint(15, 40)
        data_type = rng.choice(TYPES)
        tags.append(TagConfig(name=f"{prefix}{i}", address=cursor + gap, type=data_type))
        cursor += gap + word_count(data_type)
    return tags


def optimum(tags: Sequence[TagConfig], limit: int = MAX_REGISTERS, gap: int = MAX_GAP) -> int:
    """Fewest requests for non-overlapping tags in address order (DP over contiguous groups)."""
    ts = sorted(tags, key=lambda t: t.address)
    ends = [t.address + word_count(t.type) for t in ts]
    best = [0] + [10**9] * len(ts)
    for j in range(1, len(ts) + 1):
        i = j - 1
        while i >= 0 and ends[j - 1] - ts[i].address <= limit:
            if i < j - 1 and ts[i + 1].address - ends[i] > gap:
                break
            best[j] = min(best[j], best[i] + 1)
            i -= 1
    return best[-1]


def per_tag(device: ModbusDevice) -> tuple[ReadRequest, ...]:
    return tuple(
        ReadRequest(
            t.table, t.address, word_count(t.type), (PlannedPoint(i, 0, word_count(t.type)),)
        )
        for i, t in enumerate(device.tags)
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- servers in another process ------------------------------------------------------------------


def serve(kind: str, where: str, registers: int, units: int) -> None:
    from pymodbus.server import ModbusSerialServer, ModbusTcpServer
    from pymodbus.simulator import DataType as SimType
    from pymodbus.simulator import SimData, SimDevice

    def device(unit: int) -> SimDevice:
        regs = [SimData(address=0, count=registers, values=7, datatype=SimType.REGISTERS)]
        bits = [SimData(address=0, values=[False] * 16, datatype=SimType.BITS)]
        return SimDevice(id=unit, simdata=(bits, bits, regs, regs))

    async def main() -> None:
        devices = [device(u) for u in range(1, units + 1)]
        if kind == "tcp":
            server: object = ModbusTcpServer(devices, address=("127.0.0.1", int(where)))
        else:
            server = ModbusSerialServer(devices, port=where, baudrate=115200)
        await server.serve_forever()  # type: ignore[attr-defined]

    asyncio.run(main())


def start_server(kind: str, where: str, registers: int, units: int = 1) -> subprocess.Popen[bytes]:
    args = [sys.executable, __file__, "--serve", kind, where, str(registers), str(units)]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def wait_tcp(port: int) -> None:
    for _ in range(200):
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        w.close()
        return
    raise RuntimeError("server did not start")


# -- 1. coalescing and CPU over TCP --------------------------------------------------------------


async def tcp_cycles(device: ModbusDevice, cycles: int) -> tuple[float, float, int]:
    """(agent CPU s, wall s, samples) of ``cycles`` polls; every sample must be GOOD."""
    async with device:
        await device.poll()  # connect
        cpu, wall, samples = time.process_time(), time.perf_counter(), 0
        for _ in range(cycles):
            batch = await device.poll()
            assert (batch.quality == 0).all(), "bench PLC gave bad samples"
            samples += len(batch)
        return time.process_time() - cpu, time.perf_counter() - wall, samples


def bench_tcp(n: int, kind: str, cycles: int) -> list[str]:
    tags = layout(n, seed=n, kind=kind)
    port = free_port()
    proc = start_server("tcp", str(port), tags[-1].address + 8)
    try:
        asyncio.run(wait_tcp(port))

        def make() -> ModbusDevice:
            cfg = ModbusTcpDeviceConfig(
                name=f"plc{n}",
                host="127.0.0.1",
                port=port,
                timeout_s=5.0,
                poll_interval_s=5.0,
                tags=tuple(tags),
            )
            d = build_device(
                cfg, tag_index={t.name: i for i, t in enumerate(tags)}, serial_ports={}
            )
            assert isinstance(d, ModbusDevice)
            return d

        planned = make()
        cpu, wall, samples = asyncio.run(tcp_cycles(planned, cycles))
        naive = make()
        naive.requests = per_tag(naive)
        base_cycles = max(1, cycles * 1000 // n // 4)
        b_cpu, b_wall, b_samples = asyncio.run(tcp_cycles(naive, base_cycles))
    finally:
        proc.terminate()
        proc.wait()
    opt = optimum(tags)
    per10k = cpu / samples * 10_000
    b_per10k = b_cpu / b_samples * 10_000
    return [
        f"| {n:>6,} | {kind:<6} | {len(planned.requests):>5} | {n:>6,} | {opt:>5} "
        f"| {len(planned.requests) / opt:>5.2f} | {per10k:.4f} | {b_per10k:.4f} "
        f"| {per10k / b_per10k:.3f} | {wall / cycles * 1000:>7.1f} "
        f"| {b_wall / base_cycles * 1000:>8.1f} |"
    ]


# -- 2. jitter of healthy devices next to a silent one -------------------------------------------


async def silent(port: int) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(1024):
            pass
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", port)


async def poll_bus(device: ModbusDevice, starts: list[float]) -> None:
    """The pipeline's per-bus loop (agent/pipeline.py): due times, missed slots skipped."""
    loop = asyncio.get_running_loop()
    due = loop.time()
    while True:
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        starts.append(loop.time())
        await device.poll()
        due += device.poll_interval_s
        now = loop.time()
        if now > due:
            due += (int((now - due) / device.poll_interval_s) + 1) * device.poll_interval_s


async def jitter_run(
    ports: list[int], silent_port: int | None, seconds: float, period: float
) -> list[float]:
    tags = tuple(layout(50, seed=3))
    devices = []
    for k, port in enumerate(ports):
        cfg = ModbusTcpDeviceConfig(
            name=f"ok{k}",
            host="127.0.0.1",
            port=port,
            unit_id=1,
            poll_interval_s=period,
            timeout_s=period,
            tags=tags,
        )
        devices.append(
            build_device(cfg, tag_index={t.name: i for i, t in enumerate(tags)}, serial_ports={})
        )
    server = None
    if silent_port is not None:
        server = await silent(silent_port)
        cfg = ModbusTcpDeviceConfig(
            name="dead",
            host="127.0.0.1",
            port=silent_port,
            poll_interval_s=period,
            timeout_s=period,
            tags=tags,
        )
        devices.append(
            build_device(cfg, tag_index={t.name: i for i, t in enumerate(tags)}, serial_ports={})
        )
    starts: list[list[float]] = [[] for _ in devices]
    tasks = []
    for d in devices:
        await d.__aenter__()
    for d, s in zip(devices, starts, strict=True):
        assert isinstance(d, ModbusDevice)
        tasks.append(asyncio.create_task(poll_bus(d, s)))
    await asyncio.sleep(seconds)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for d in devices:
        await d.__aexit__(None, None, None)
    if server is not None:
        server.close()
        await asyncio.sleep(0.05)  # the silent peer's handler sees EOF and ends
        await server.wait_closed()
    healthy = starts[: len(ports)]
    return [abs((b - a) - period) for s in healthy for a, b in itertools.pairwise(s[1:])]


def p95(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=20)[-1] if len(xs) >= 2 else float("nan")


def bench_jitter(seconds: float, period: float = 0.2, healthy: int = 4) -> list[str]:
    ports = [free_port() for _ in range(healthy)]
    procs = [start_server("tcp", str(p), 400) for p in ports]
    try:
        for p in ports:
            asyncio.run(wait_tcp(p))
        base = asyncio.run(jitter_run(ports, None, seconds, period))
        loaded = asyncio.run(jitter_run(ports, free_port(), seconds, period))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()
    rows = []
    for label, xs in (
        ("without a silent device (baseline)", base),
        ("with a silent device", loaded),
    ):
        rows.append(
            f"| {label:<34} | {len(xs):>5} | {p95(xs) * 1000:>7.2f} "
            f"| {p95(xs) / period * 100:>6.2f} % |"
        )
    rows.append(f"ratio with/without: {p95(loaded) / p95(base):.2f}")
    return rows


# -- 3. eight unit ids on one RTU line -----------------------------------------------------------


async def rtu_cycles(devices: list[ModbusDevice], cycles: int) -> float:
    for d in devices:
        await d.__aenter__()
    try:
        deadline = time.monotonic() + 30.0
        for d in devices:  # the server process may still be starting: wait until it answers
            await d.poll()
            while not d.online and time.monotonic() < deadline:
                await asyncio.sleep(0.25)
                await d.poll()
        start = time.perf_counter()
        for _ in range(cycles):
            for d in devices:
                batch = await d.poll()
                assert (batch.quality == 0).all(), f"bench RTU unit gave bad samples: {d.health()}"
        return (time.perf_counter() - start) / cycles
    finally:
        for d in devices:
            await d.__aexit__(None, None, None)


def bench_rtu(cycles: int, units: int = 8, tags_per_unit: int = 40) -> list[str]:
    socat = shutil.which("socat")
    if socat is None:
        return ["(skipped: socat not installed)"]
    tmp = Path(tempfile.mkdtemp())
    a, b = tmp / "agent", tmp / "plc"
    relay = subprocess.Popen(
        [socat, f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not (a.exists() and b.exists()):
            time.sleep(0.01)
        unit_tags = [
            layout(tags_per_unit, seed=100 + u, prefix=f"u{u}-") for u in range(1, units + 1)
        ]
        regs = max(t[-1].address for t in unit_tags) + 8
        proc = start_server("rtu", str(b), regs, units)
        time.sleep(1.0)
        port = SerialPortConfig(name="line", path=str(a), baudrate=115200)
        devices: list[ModbusDevice] = []
        naive: list[ModbusDevice] = []
        for u, tags in enumerate(unit_tags, start=1):
            cfg = ModbusRtuDeviceConfig(
                name=f"u{u}",
                serial_port="line",
                unit_id=u,
                timeout_s=1.0,
                poll_interval_s=2.0,
                tags=tuple(tags),
            )
            for out in (devices, naive):
                d = build_device(
                    cfg,
                    tag_index={t.name: i for i, t in enumerate(tags)},
                    serial_ports={"line": port},
                )
                assert isinstance(d, ModbusDevice)
                out.append(d)
        for d in naive:
            d.requests = per_tag(d)
        try:
            t_planned = asyncio.run(rtu_cycles(devices, cycles))
            t_naive = asyncio.run(rtu_cycles(naive, max(1, cycles // 5)))
        finally:
            proc.terminate()
            proc.wait()
    finally:
        relay.terminate()
        relay.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    planned = sum(len(d.requests) for d in devices)
    per = sum(len(d.requests) for d in naive)
    opt = sum(optimum(t) for t in unit_tags)
    return [
        f"| {units} × {tags_per_unit} | {planned:>5} | {per:>5} | {opt:>5} | {planned / opt:.2f} "
        f"| {t_planned * 1000:>7.1f} | {t_naive * 1000:>8.1f} | {t_planned / t_naive:.3f} |"
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument(
        "--layouts", nargs="+", choices=sorted(LAYOUTS), default=["dense", "sparse"]
    )
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--jitter-s", type=float, default=10.0)
    parser.add_argument("--random-maps", type=int, default=20)
    parser.add_argument("--refusal-s", type=float, default=2.0)
    parser.add_argument("--outage-s", type=float, default=6.0)
    parser.add_argument("--recovery-periods", type=float, nargs="+", default=[0.5, 1.0, 5.0])
    parser.add_argument("--probe-s", type=float, default=2.0)
    parser.add_argument("--serve", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        kind, where, registers, units = args.serve
        serve(kind, where, int(registers), int(units))
        return
    logging.getLogger("drivers").setLevel(logging.ERROR)  # refusals are the point here
    print(f"machine: {machine()}")
    print(
        "\n1. Modbus TCP, one simulated PLC (server in another process), "
        f"max_registers {MAX_REGISTERS}, max_gap {MAX_GAP}; types {', '.join(TYPES)}"
    )
    for kind in args.layouts:
        print(f"   {kind}: {LAYOUTS[kind]}")
    print(
        "| tags | layout | requests/cycle | one per tag | optimum | ÷ optimum "
        "| agent CPU-s per 10k samples | baseline: one per tag | ratio | cycle ms | baseline ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n in args.tags:
        for kind in args.layouts:
            for row in bench_tcp(n, kind, args.cycles):
                print(row, flush=True)
    print(
        f"\n2. Poll-period jitter of 4 healthy TCP devices, period 0.2 s, {args.jitter_s:g} s each"
    )
    print("| run | intervals | p95 jitter ms | % of period |")
    print("|---|---|---|---|")
    for row in bench_jitter(args.jitter_s):
        print(row, flush=True)
    print("\n3. Modbus RTU, 8 unit ids on one line (socat pty pair, 115200 baud setting)")
    print(
        "| units × tags | requests/cycle | one per tag | optimum | ÷ optimum | cycle ms "
        "| baseline ms (one per tag) | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in bench_rtu(max(1, args.cycles // 2)):
        print(row, flush=True)
    print("\n4. Refused addresses: requests per cycle once learned, pymodbus servers")
    print("| map | tags | refused registers | polls that re-planned | requests/cycle | optimum "
          "| ÷ optimum | baseline: one per tag | gain |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for row in bench_refusals(args.random_maps):
        print(row, flush=True)
    print("\n5. Transient refusal of holding 0-19 (20 tags, one block), polled every 0.2 s")
    print("| refused for | requests before | worst while refused | polls until 1 request "
          "after the tags read fine | target | met |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for row in bench_transient(args.refusal_s, 0.2):
        print(row, flush=True)
    print("\n6. Recovery: silent device answers again; time to the first GOOD sample")
    print("| device | period | probe interval | outage | seconds to GOOD "
          "| bound max(2p, probe+p) | ÷ bound |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for row in bench_recovery(args.recovery_periods, args.probe_s, args.outage_s):
        print(row, flush=True)
    for row in bench_serial_recovery(args.recovery_periods, args.probe_s, args.outage_s):
        print(row, flush=True)


if __name__ == "__main__":
    main()
