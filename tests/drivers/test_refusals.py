"""Planning around refused addresses: bisection to the smallest refused span, the optimal plan
around exactly those spans (against a brute-force optimum), forgetting when the refusal ends.

The property tests run the sans-I/O bisection against an in-memory register map (a model of a
device, the only peer that can answer thousands of hole maps in seconds); the hole maps of the
field report run against real pymodbus servers and a raw TCP peer that refuses for a while."""

from __future__ import annotations

import asyncio
import itertools
import struct
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers import ModbusDevice, Quality, build_device
from drivers.config import ModbusTcpDeviceConfig, TagConfig
from drivers.planner import AddressRange, plan_reads
from drivers.refusals import Refused, Span, bisect
from tests.drivers.peers import (
    ManualClock,
    Reply,
    free_port,
    mbap,
    scripted_tcp_peer,
    tcp_server,
)

# -- the model ------------------------------------------------------------------------------


def refused_in(holes: set[int], start: int, count: int) -> bool:
    return any(a in holes for a in range(start, start + count))


def poll_model(tags: Sequence[TagConfig], holes: set[int], excluded: list[AddressRange],
               max_gap: int, limit: int) -> tuple[int, int]:  # fmt: skip
    """One poll against the model: (requests sent, requests planned); learns into
    ``excluded``."""
    plan = plan_reads(tags, max_gap=max_gap, max_registers=limit, excluded=excluded)
    sent = 0

    async def read(start: int, count: int) -> list[int]:
        if refused_in(holes, start, count):
            raise Refused(2)
        return [0] * count

    for req in plan:
        sent += 1
        if not refused_in(holes, req.address, req.count):
            continue
        if len(req.points) == 1 and req.count == req.points[0].width:
            excluded.append(("holding", req.address, req.address + req.count))
            continue
        spans = [Span(p.tag, req.address + p.offset, req.address + p.offset + p.width)
                 for p in req.points]  # fmt: skip
        result = asyncio.run(bisect(read, sorted(spans, key=lambda s: s.start), 2))
        sent += result.requests
        excluded += [("holding", s, e) for s, e, _c, _t in result.refused]
    return sent, len(plan)


def brute_force_optimum(tags: Sequence[TagConfig], holes: set[int], max_gap: int,
                        limit: int) -> int:  # fmt: skip
    """Fewest requests: a tag on a refused register alone; the others cut, in address order,
    into groups that span <= limit, skip <= max_gap between tags and contain no refused
    address — every way of cutting is tried."""
    spans = sorted((t.address, t.address + width(t)) for t in tags)
    bad = [s for s in spans if refused_in(holes, s[0], s[1] - s[0])]
    good = [s for s in spans if s not in bad]
    if not good:
        return len(bad)

    def feasible(group: Sequence[tuple[int, int]]) -> bool:
        start, end = group[0][0], max(e for _, e in group)
        gaps_ok = all(b[0] - a[1] <= max_gap for a, b in itertools.pairwise(group))
        return end - start <= limit and gaps_ok and not refused_in(holes, start, end - start)

    best = len(good)
    for cuts in itertools.product((False, True), repeat=len(good) - 1):
        groups, current = [], [good[0]]
        for cut, span in zip(cuts, good[1:], strict=True):
            if cut:
                groups.append(current)
                current = [span]
            else:
                current.append(span)
        groups.append(current)
        if all(feasible(g) for g in groups):
            best = min(best, len(groups))
    return best + len(bad)


def width(tag: TagConfig) -> int:
    return {"uint16": 1, "uint32": 2, "uint64": 4}[tag.type]


@st.composite
def hole_maps(draw: st.DrawFn) -> tuple[list[TagConfig], set[int], int, int]:
    """Up to 11 non-overlapping register tags on 0..160 and random refused addresses."""
    n = draw(st.integers(1, 11))
    tags: list[TagConfig] = []
    cursor = 0
    for i in range(n):
        cursor += draw(st.integers(0, 14))
        kind = draw(st.sampled_from(["uint16", "uint16", "uint32", "uint64"]))
        tags.append(TagConfig(name=f"t{i}", address=cursor, type=kind))  # type: ignore[arg-type]
        cursor += width(tags[-1])
    holes = set(draw(st.lists(st.integers(0, cursor + 2), max_size=8)))
    runs = draw(st.lists(st.tuples(st.integers(0, cursor), st.integers(1, 12)), max_size=2))
    for start, length in runs:
        holes |= set(range(start, start + length))
    return tags, holes, draw(st.integers(0, 12)), draw(st.integers(4, 60))


@settings(max_examples=200, deadline=None)
@given(hole_maps())
def test_once_the_refusals_are_learned_the_plan_has_the_brute_force_optimal_request_count(
    case: tuple[list[TagConfig], set[int], int, int],
) -> None:
    """A hole is learned when a planned request first covers it; a re-plan may bridge a gap
    that was never read, so learning can take a few polls, then the plan is optimal."""
    tags, holes, max_gap, limit = case
    excluded: list[AddressRange] = []
    learning = []
    for _ in range(5):
        sent, planned = poll_model(tags, holes, excluded, max_gap, limit)
        learning.append(sent != planned)
        if not learning[-1]:
            break
    assert len(learning) <= 4 and not learning[-1]
    assert planned == brute_force_optimum(tags, holes, max_gap, limit)
    sent, again = poll_model(tags, holes, excluded, max_gap, limit)
    assert sent == again == planned  # stable: no more bisection once learned


@settings(max_examples=200, deadline=None)
@given(hole_maps())
def test_a_refused_gap_is_narrowed_to_its_first_and_last_refused_address(
    case: tuple[list[TagConfig], set[int], int, int],
) -> None:
    tags, holes, max_gap, limit = case
    excluded: list[AddressRange] = []
    poll_model(tags, holes, excluded, max_gap, limit)
    covered = {t.address + k for t in tags for k in range(width(t))}
    for _table, start, end in excluded:
        if not any(start <= a < end for a in covered):  # a hole between tags
            assert start in holes and end - 1 in holes


# -- the field report's hole maps, against pymodbus -------------------------------------------


def regs(*blocks: tuple[int, int]) -> list[SimData]:
    return [SimData(address=a, values=[a + i for i in range(n)], datatype=DataType.REGISTERS)
            for a, n in blocks]  # fmt: skip


def sim(holding: list[SimData], inputs: list[SimData]) -> SimDevice:
    bits = [SimData(address=0, values=[False] * 16, datatype=DataType.BITS)]
    return SimDevice(id=1, simdata=(bits, bits, holding, inputs))


def tcp(port: int, tags: list[TagConfig], clock: ManualClock, **kw: object) -> ModbusDevice:
    cfg = ModbusTcpDeviceConfig(name="plc", host="127.0.0.1", port=port, timeout_s=0.5,
                                tags=tuple(tags), **kw)  # type: ignore[arg-type]  # fmt: skip
    device = build_device(cfg, tag_index={t.name: i for i, t in enumerate(tags)},
                          serial_ports={}, monotonic=clock)  # fmt: skip
    assert isinstance(device, ModbusDevice)
    return device


def plan(device: ModbusDevice) -> list[tuple[int, int]]:
    return [(r.address, r.count) for r in device.requests]


CASES = {
    "holding 51 unmapped, 50 tags at even 0..98": (
        sim(regs((0, 51), (52, 48)), regs((0, 1))),
        [TagConfig(name=f"h{a}", address=a) for a in range(0, 100, 2)],
        [(0, 51), (52, 47)],
    ),
    "input 10..19 unmapped, tags 0 1 2 4 9 20 25": (
        sim(regs((0, 1)), regs((0, 10), (20, 10))),
        [TagConfig(name=f"i{a}", table="input", address=a) for a in (0, 1, 2, 4, 9, 20, 25)],
        [(0, 10), (20, 6)],
    ),
    "one tag on an unmapped address": (
        sim(regs((0, 6), (7, 5)), regs((0, 1))),
        [TagConfig(name=f"h{a}", address=a) for a in (0, 2, 4, 6, 8, 10)],
        [(0, 5), (6, 1), (8, 3)],
    ),
}


@pytest.mark.integration
@pytest.mark.parametrize("case", list(CASES))
def test_a_field_hole_map_costs_the_optimal_request_count_from_the_second_poll(case: str) -> None:
    device_sim, tags, want = CASES[case]

    async def main() -> tuple[list[tuple[int, int]], list[str], list[dict[str, object]]]:
        port, clock = free_port(), ManualClock()
        async with tcp_server(port, device_sim), tcp(port, tags, clock) as device:
            await device.poll()
            batch = await device.poll()
            return plan(device), [Quality(int(q)).name for q in batch.quality], \
                device.health()["refusals"]  # type: ignore[return-value]  # fmt: skip

    got, qualities, refusals = asyncio.run(main())
    assert sorted(got) == want
    bad = {t.name for t in tags if t.address == 6} if "unmapped address" in case else set()
    assert qualities == ["BAD_DEVICE" if t.name in bad else "GOOD" for t in tags]
    assert refusals and all(r["code"] == 2 for r in refusals)


# -- a refusal that ends (a PLC program download) -----------------------------------------------


def refusing_plc(values: list[int], refusing: list[bool], sent: list[tuple[int, int]]) -> Reply:
    """FC03 over ``values``; exception 2 for any read touching 0..19 while ``refusing[0]``."""

    def reply(_n: int, tid: int, unit: int, pdu: bytes) -> list[bytes]:
        fc, address, count = struct.unpack(">BHH", pdu[:5])
        sent.append((address, count))
        if fc != 3 or address + count > len(values) or (refusing[0] and address < 20):
            return [mbap(tid, unit, bytes([fc | 0x80, 2]))]
        body = b"".join(struct.pack(">H", v) for v in values[address : address + count])
        return [mbap(tid, unit, bytes([3, len(body)]) + body)]

    return reply


@pytest.mark.integration
def test_a_transient_refusal_is_forgotten_and_the_block_merges_within_two_polls() -> None:
    tags = [TagConfig(name=f"h{a}", address=a) for a in range(20)]

    async def main() -> list[tuple[int, list[str]]]:
        port, clock = free_port(), ManualClock()
        refusing = [False]
        sent: list[tuple[int, int]] = []
        out = []
        peer = scripted_tcp_peer(port, refusing_plc(list(range(100, 130)), refusing, sent))
        async with peer, tcp(port, tags, clock) as device:
            for step in range(7):
                refusing[0] = step in (1, 2)  # refused for two polls
                clock.now = float(step)
                batch = await device.poll()
                out.append((len(device.requests), [Quality(int(q)).name for q in batch.quality]))
        return out

    out = asyncio.run(main())
    assert out[0] == (1, ["GOOD"] * 20)
    assert out[1][0] == 20 and set(out[1][1]) == {"BAD_DEVICE"}  # every tag alone, refused
    assert out[2] == (20, ["BAD_DEVICE"] * 20)
    assert out[3] == (1, ["GOOD"] * 20)  # each read fine alone: forgotten, merged for poll 5
    assert out[4:] == [(1, ["GOOD"] * 20)] * 3


@pytest.mark.integration
def test_a_hole_is_retried_after_refusal_retry_s_and_merges_when_it_got_mapped() -> None:
    tags = [TagConfig(name="a", address=9), TagConfig(name="b", address=12)]

    async def main() -> list[int]:
        port, clock = free_port(), ManualClock()
        holes = [True]
        sent: list[tuple[int, int]] = []

        def reply(_n: int, tid: int, unit: int, pdu: bytes) -> list[bytes]:
            _fc, address, count = struct.unpack(">BHH", pdu[:5])
            sent.append((address, count))
            if holes[0] and address <= 10 < address + count:
                return [mbap(tid, unit, bytes([0x83, 2]))]
            return [mbap(tid, unit, bytes([3, 2 * count]) + b"\x00\x01" * count)]

        counts = []
        async with scripted_tcp_peer(port, reply), \
                tcp(port, tags, clock, refusal_retry_s=60.0) as device:  # fmt: skip
            for t in (0.0, 1.0, 59.0, 61.0, 62.0):
                if t == 61.0:
                    holes[0] = False  # the PLC program now maps address 10
                clock.now = t
                await device.poll()
                counts.append(len(device.requests))
        return counts

    assert asyncio.run(main()) == [2, 2, 2, 1, 1]
