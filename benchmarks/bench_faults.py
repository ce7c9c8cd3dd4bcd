"""Fault targets of the driver benchmark (tables 4-6 of bench_drivers.py).

4. Refused addresses: for the field report's three hole maps, random hole maps, and maps whose
   tags overlap (a uint32 over a uint16, bit tags of one register; pymodbus servers with
   unmapped registers), the polls that learned something (a hole is found when a
   planned request first covers it), then requests per cycle against an independent optimum
   over the readable registers and against one request per tag (what the old isolation fell
   back to).
5. A transient refusal (exception 2 on holding 0-19 for ``refusal_s`` wall seconds, a raw TCP
   peer): polls from the first poll in which every tag reads fine again to the plan being back
   at one request. Target: <= 2.
6. Recovery: a device silent for ``outage_s`` then answering again just after a failed probe
   (the worst case): wall seconds from the server answering to the first GOOD sample, against
   the bound max(2 x period, probe interval + period). Two devices: a Modbus TCP device (a
   pymodbus server that comes back) and a serial-line gas controller polled with a request on
   a pseudo-terminal (the benchmark answers its requests with real bytes once it is back).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
import socket
import struct
import time
import tty
from collections.abc import AsyncIterator, Sequence

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice

from drivers import ModbusDevice, Quality, SerialLineDevice, build_device
from drivers.codec import word_count
from drivers.config import (
    ModbusTcpDeviceConfig,
    SerialLineDeviceConfig,
    SerialLineTagConfig,
    SerialPortConfig,
    Table,
    TagConfig,
)

__all__ = ["bench_recovery", "bench_refusals", "bench_serial_recovery", "bench_transient"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _device(port: int, tags: Sequence[TagConfig], **kw: object) -> ModbusDevice:
    kw = {"timeout_s": 0.5, **kw}
    cfg = ModbusTcpDeviceConfig(name="plc", host="127.0.0.1", port=port, tags=tuple(tags),
                                **kw)  # type: ignore[arg-type]  # fmt: skip
    device = build_device(cfg, tag_index={t.name: i for i, t in enumerate(tags)},
                          serial_ports={})  # fmt: skip
    assert isinstance(device, ModbusDevice)
    return device


def _blocks(size: int, holes: set[int]) -> list[SimData]:
    out, start = [], None
    for a in range(size + 1):
        mapped = a < size and a not in holes
        if mapped and start is None:
            start = a
        if not mapped and start is not None:
            out.append(SimData(address=start, values=[1] * (a - start),
                               datatype=SimType.REGISTERS))  # fmt: skip
            start = None
    return out


def _sim(table: Table, size: int, holes: set[int]) -> SimDevice:
    bits = [SimData(address=0, values=[False] * 16, datatype=SimType.BITS)]
    regs = _blocks(size, holes)
    one = [SimData(address=0, values=[1], datatype=SimType.REGISTERS)]
    tables = (regs, one) if table == "holding" else (one, regs)
    return SimDevice(id=1, simdata=(bits, bits, *tables))


def optimum(tags: Sequence[TagConfig], holes: set[int], limit: int = 125, gap: int = 10) -> int:
    """Fewest requests (single-register tags): a tag on a hole alone, the rest by a DP over
    contiguous groups that cross no hole."""
    addrs = sorted(t.address for t in tags)
    bad = [a for a in addrs if a in holes]
    good = [a for a in addrs if a not in holes]
    best = [0] + [10**9] * len(good)
    for j in range(1, len(good) + 1):
        for i in range(j - 1, -1, -1):
            start, end = good[i], good[j - 1] + 1
            if end - start > limit or any(h in holes for h in range(start, end)):
                break
            if i < j - 1 and good[i + 1] - good[i] - 1 > gap:
                break
            best[j] = min(best[j], best[i] + 1)
    return best[-1] + len(bad)


def _maps(count: int, seed: int) -> list[tuple[str, Table, int, list[int], set[int]]]:
    maps: list[tuple[str, Table, int, list[int], set[int]]] = [
        ("field: holding 51 unmapped", "holding", 100, list(range(0, 100, 2)), {51}),
        ("field: input 10-19 unmapped", "input", 30, [0, 1, 2, 4, 9, 20, 25], set(range(10, 20))),
        ("field: a tag on a hole", "holding", 12, [0, 2, 4, 6, 8, 10], {6}),
    ]
    rng = random.Random(seed)
    for k in range(count):
        size = rng.randint(40, 240)
        tags = sorted(rng.sample(range(size), rng.randint(5, min(40, size))))
        holes = set(rng.sample(range(size), rng.randint(1, 6)))
        for _ in range(rng.randint(0, 2)):
            s = rng.randrange(size)
            holes |= set(range(s, min(size, s + rng.randint(2, 15))))
        maps.append((f"random #{k + 1}", "holding", size, tags, holes))
    return maps


def cover_optimum(tags: Sequence[TagConfig], holes: set[int], limit: int = 125,
                  gap: int = 10) -> int:  # fmt: skip
    """Fewest requests for tags of any width that may overlap: a tag on a hole alone; the
    others by an exact set cover over requests [s, e) (s a tag's start, e a tag's end) of at
    most ``limit`` registers, crossing no hole, with no run over ``gap`` outside the tags they
    hold (memoised search; small maps only)."""
    spans = [(t.address, t.address + word_count(t.type)) for t in tags]
    bad = [x for x in spans if any(a in holes for a in range(*x))]
    good = sorted({x for x in spans if x not in bad})
    covers = []
    for s in {g[0] for g in good}:
        for e in {g[1] for g in good}:
            if not 0 < e - s <= limit or any(a in holes for a in range(s, e)):
                continue
            inside = [i for i, g in enumerate(good) if s <= g[0] and g[1] <= e]
            held = {a for i in inside for a in range(*good[i])}
            run = longest = 0
            for a in range(s, e):
                run = 0 if a in held else run + 1
                longest = max(longest, run)
            if inside and longest <= gap:
                covers.append(sum(1 << i for i in inside))

    @functools.cache
    def fewest(done: int) -> int:
        if done == (1 << len(good)) - 1:
            return 0
        low = next(i for i in range(len(good)) if not done >> i & 1)
        return 1 + min(fewest(done | c) for c in covers if c >> low & 1)

    return fewest(0) + len(bad)


def _overlap_maps(count: int, seed: int) -> list[tuple[str, int, list[TagConfig], set[int]]]:
    """Maps whose tags overlap (a uint32 over a uint16, bit tags of one register)."""
    u32, u64 = "uint32", "uint64"
    fixed = [
        ("overlap: uint32 on 10-11 over uint16 on 10, 11 unmapped", 20,
         [(0, u32, None), (10, u32, None), (10, "uint16", None), (12, "bool", 0),
          (12, "bool", 2), (13, "uint16", None)], {11}),
        ("overlap: two bits of 4 unmapped", 30,
         [(4, "bool", 0), (4, "bool", 1), (5, "uint16", None), (20, u64, None)], {4}),
    ]  # fmt: skip
    rng = random.Random(seed)
    for k in range(count):
        specs, cursor = [], 0
        for _ in range(rng.randint(4, 12)):
            cursor = max(0, cursor + rng.randint(-3, 8))
            kind = rng.choice(["uint16", u32, u64, "bool"])
            specs.append((cursor, kind, rng.randrange(16) if kind == "bool" else None))
        size = cursor + 8
        holes = set(rng.sample(range(size), rng.randint(1, 4)))
        fixed.append((f"overlap random #{k + 1}", size, specs, holes))
    return [
        (name, size, [TagConfig(name=f"t{i}", address=a, type=kind, bit=bit)  # type: ignore[arg-type]
                      for i, (a, kind, bit) in enumerate(specs)], holes)
        for name, size, specs, holes in fixed
    ]  # fmt: skip


def bench_refusals(random_maps: int, seed: int = 7) -> list[str]:
    rows = []

    async def one(
        table: Table, size: int, tags: list[TagConfig], holes: set[int]
    ) -> tuple[int, int]:
        port = _port()
        server = ModbusTcpServer([_sim(table, size, holes)], address=("127.0.0.1", port))
        await server.serve_forever(background=True)
        try:
            async with _device(port, tags) as device:
                for polls in range(1, 7):  # until a poll changes nothing
                    before = device.replans
                    await device.poll()
                    if device.replans == before:
                        return len(device.requests), polls
                raise RuntimeError(f"the plan is not stable: {device.health()}")
        finally:
            await server.shutdown()  # type: ignore[no-untyped-call]

    cases = [
        (
            name,
            table,
            size,
            [TagConfig(name=f"t{a}", table=table, address=a) for a in addrs],
            holes,
            optimum,
        )
        for name, table, size, addrs, holes in _maps(random_maps, seed)
    ]
    cases += [
        (name, "holding", size, tags, holes, cover_optimum)
        for name, size, tags, holes in _overlap_maps(max(1, random_maps // 2), seed)
    ]
    for name, table, size, tags, holes, best_of in cases:
        steady, polls = asyncio.run(one(table, size, tags, holes))
        best = best_of(tags, holes)
        n = len(tags)
        rows.append(f"| {name} | {n} | {len(holes)} | {polls - 1} | {steady} | {best} | "
                    f"{steady / best:.2f} | {n} | {n / steady:.1f} |")  # fmt: skip
    return rows


@contextlib.asynccontextmanager
async def _refusing_peer(port: int, until: list[float]) -> AsyncIterator[None]:
    """FC03 over 30 registers; exception 2 for reads touching 0..19 while now < until[0]."""

    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readexactly(7)
                tid, _, length, unit = struct.unpack(">HHHB", head)
                pdu = await reader.readexactly(length - 1)
                fc, address, count = struct.unpack(">BHH", pdu[:5])
                if time.monotonic() < until[0] and address < 20:
                    body = bytes([fc | 0x80, 2])
                else:
                    body = bytes([3, 2 * count]) + b"\x00\x07" * count
                writer.write(struct.pack(">HHHB", tid, 0, len(body) + 1, unit) + body)
                await writer.drain()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()
        for w in writers:
            w.close()
            with contextlib.suppress(ConnectionError):
                await w.wait_closed()
        await asyncio.sleep(0.01)  # let the handlers see EOF and end
        await server.wait_closed()


def bench_transient(refusal_s: float, period_s: float) -> list[str]:
    async def main() -> tuple[int, int, int]:
        port, until = _port(), [0.0]
        tags = [TagConfig(name=f"h{a}", address=a) for a in range(20)]
        async with _refusing_peer(port, until), _device(port, tags) as device:
            await device.poll()
            before = len(device.requests)
            until[0] = time.monotonic() + refusal_s
            worst, fine_at, polls = 0, None, 0
            while True:
                batch = await device.poll()
                polls += 1
                worst = max(worst, len(device.requests))
                good = bool((batch.quality == Quality.GOOD).all())
                if good and fine_at is None and time.monotonic() > until[0]:
                    fine_at = polls
                if fine_at is not None and len(device.requests) == before:
                    return before, worst, polls - fine_at + 1
                await asyncio.sleep(period_s)

    before, worst, polls = asyncio.run(main())
    return [
        f"| {refusal_s:g} s | {before} | {worst} | {polls} | 2 | {'yes' if polls <= 2 else 'NO'} |"
    ]


async def _silent(port: int, writers: list[asyncio.StreamWriter]) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        with contextlib.suppress(ConnectionError):
            while await reader.read(1024):
                pass

    return await asyncio.start_server(handle, "127.0.0.1", port)


def bench_recovery(periods: Sequence[float], probe_s: float, outage_s: float) -> list[str]:
    rows = []

    async def one(period: float) -> float:
        port = _port()
        tags = [TagConfig(name="a", address=0)]
        sim = SimDevice(id=1, simdata=([SimData(address=0, values=[False] * 16,
                                                datatype=SimType.BITS)],) * 2 + (
            [SimData(address=0, values=[1], datatype=SimType.REGISTERS)],) * 2)  # fmt: skip
        device = _device(port, tags, poll_interval_s=period, probe_interval_s=probe_s,
                         timeout_s=min(0.3, period))  # fmt: skip
        async with device:
            writers: list[asyncio.StreamWriter] = []
            silent = await _silent(port, writers)
            loop = asyncio.get_running_loop()
            due = loop.time()
            end = due + outage_s
            while True:  # scheduled like the pipeline: one slot per period
                before = device.recovery.probes
                await device.poll()
                due += period
                if loop.time() >= end and device.recovery.probes > before:
                    break  # the worst case: the device is back right after a failed probe
                await asyncio.sleep(max(0.0, due - loop.time()))
            silent.close()  # the device restarts: its connections close, then it answers
            for w in writers:
                w.close()
            await silent.wait_closed()
            server = ModbusTcpServer([sim], address=("127.0.0.1", port))
            await server.serve_forever(background=True)
            back = loop.time()
            try:
                while True:
                    await asyncio.sleep(max(0.0, due - loop.time()))
                    batch = await device.poll()
                    if batch.quality[0] == Quality.GOOD:
                        return loop.time() - back
                    due += period
            finally:
                await server.shutdown()  # type: ignore[no-untyped-call]

    for period in periods:
        took = asyncio.run(one(period))
        bound = max(2 * period, probe_s + period)
        rows.append(f"| modbus tcp | {period:g} s | {probe_s:g} s | {outage_s:g} s | {took:.2f} | "
                    f"{bound:.2f} | {took / bound:.2f} |")  # fmt: skip
    return rows


def bench_serial_recovery(periods: Sequence[float], probe_s: float, outage_s: float) -> list[str]:
    """Table 6 for a serial-line device with a poll request, on a pty (real bytes)."""
    request = b"READ\r\n"
    answer = b"$GAS,1,1.5,LEL\r\n"

    async def one(period: float, master: int, path: str) -> float:
        cfg = SerialLineDeviceConfig(
            name="gas", serial_port="p", framing="start_end", start="$", end="\r\n",
            key_field=1, poll_request=request.decode(), poll_interval_s=period,
            probe_interval_s=probe_s, timeout_s=min(0.3, period),
            tags=(SerialLineTagConfig(name="CH1", key="1", field=2),),
        )  # fmt: skip
        port = SerialPortConfig(name="p", path=path)
        device = build_device(cfg, tag_index={"CH1": 0}, serial_ports={"p": port})
        assert isinstance(device, SerialLineDevice)
        alive = [False]

        def respond() -> None:
            if request in os.read(master, 256) and alive[0]:
                os.write(master, answer)

        loop = asyncio.get_running_loop()
        loop.add_reader(master, respond)
        try:
            async with device:
                due = loop.time()
                end = due + outage_s
                while True:  # scheduled like the pipeline: one slot per period
                    before = device.recovery.probes
                    await device.poll()
                    due += period
                    if loop.time() >= end and device.recovery.probes > before:
                        break  # the worst case: the device is back right after a failed probe
                    await asyncio.sleep(max(0.0, due - loop.time()))
                alive[0], back = True, loop.time()
                while True:
                    await asyncio.sleep(max(0.0, due - loop.time()))
                    batch = await device.poll()
                    if len(batch.quality) and batch.quality[0] == Quality.GOOD:
                        return loop.time() - back
                    due += period
        finally:
            loop.remove_reader(master)

    rows = []
    for period in periods:
        master, slave = os.openpty()
        tty.setraw(slave)
        try:
            took = asyncio.run(one(period, master, os.ttyname(slave)))
        finally:
            os.close(master)
            os.close(slave)
        bound = max(2 * period, probe_s + period)
        rows.append(f"| serial line | {period:g} s | {probe_s:g} s | {outage_s:g} s | "
                    f"{took:.2f} | {bound:.2f} | {took / bound:.2f} |")  # fmt: skip
    return rows
