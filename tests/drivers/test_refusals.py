"""Planning around refused addresses: bisection to the smallest refused span, the optimal plan
around exactly those spans (against a brute-force optimum), forgetting when the refusal ends.

The property tests run the sans-I/O bisection against an in-memory register map (a model of a
device, the only peer that can answer thousands of hole maps in seconds); the hole maps of the
field report run against real pymodbus servers and a raw TCP peer that refuses for a while."""

from __future__ import annotations

import asyncio
import functools
import itertools
import struct
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers import ModbusDevice, Quality, build_device
from drivers.config import ModbusTcpDeviceConfig, TagConfig
from drivers.planner import plan_reads
from drivers.refusals import Refusals, Refused, RefusedSpan, Span, bisect
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


def poll_model(tags: Sequence[TagConfig], holes: set[int], refusals: Refusals,
               max_gap: int, limit: int) -> tuple[int, int]:  # fmt: skip
    """One poll against the model, as :class:`ModbusDevice` polls: (requests sent, requests
    planned). A refused request is bisected unless a refusal inside it is known; what is
    learned goes into ``refusals``, what reads fine is carved out of them."""
    plan = plan_reads(tags, max_gap=max_gap, max_registers=limit, excluded=refusals.ranges())
    sent = 0

    async def read(start: int, count: int) -> list[int]:
        if refused_in(holes, start, count):
            raise Refused(2)
        return [0] * count

    for req in plan:
        sent += 1
        end = req.address + req.count
        if not refused_in(holes, req.address, req.count):
            refusals.tag_read_fine("holding", req.address, end)
            continue
        if refusals.known("holding", req.address, end):
            continue
        spans = [Span(p.tag, req.address + p.offset, req.address + p.offset + p.width)
                 for p in req.points]  # fmt: skip
        result = asyncio.run(bisect(read, sorted(spans, key=lambda s: (s.start, s.end)), 2))
        sent += result.requests
        for s, e, c, held in result.refused:
            refusals.add(RefusedSpan("holding", s, e, c, held, 0.0))
    return sent, len(plan)


def brute_force_optimum(tags: Sequence[TagConfig], holes: set[int], max_gap: int,
                        limit: int) -> int:  # fmt: skip
    """Fewest requests over every way of reading the map, not only cuts in address order: a
    tag on a refused register costs one request of its own; the others are covered by
    requests ``[s, e)`` (s a tag's first register, e a tag's end), each at most ``limit``
    long, holding no refused register and no run longer than ``max_gap`` outside the tags it
    reads (it reads every tag that lies inside it). Exact set cover by memoised search over
    the readable tags (the lowest unread tag must be in the next request)."""
    spans = [(t.address, t.address + width(t)) for t in tags]
    bad = [s for s in spans if refused_in(holes, s[0], s[1] - s[0])]
    good = sorted({s for s in spans if s not in bad})
    covers: list[int] = []
    for s in {g[0] for g in good}:
        for e in {g[1] for g in good}:
            if not 0 < e - s <= limit or refused_in(holes, s, e - s):
                continue
            inside = [i for i, g in enumerate(good) if s <= g[0] and g[1] <= e]
            read = {a for i in inside for a in range(*good[i])}
            runs = [len(list(run)) for out, run in itertools.groupby(
                range(s, e), key=lambda a: a not in read) if out]  # fmt: skip
            if inside and max(runs, default=0) <= max_gap:
                covers.append(sum(1 << i for i in inside))
    full = (1 << len(good)) - 1

    @functools.cache
    def fewest(done: int) -> int:
        if done == full:
            return 0
        low = next(i for i in range(len(good)) if not done >> i & 1)
        return 1 + min(fewest(done | c) for c in covers if c >> low & 1)

    return fewest(0) + len(bad)


WIDTH = {"uint16": 1, "uint32": 2, "uint64": 4, "bool": 1}


def width(tag: TagConfig) -> int:
    return WIDTH[tag.type]


def tag_at(i: int, address: int, kind: str, bit: int) -> TagConfig:
    extra = {"bit": bit} if kind == "bool" else {}
    return TagConfig(name=f"t{i}", address=address, type=kind, **extra)  # type: ignore[arg-type]


@st.composite
def hole_maps(draw: st.DrawFn, overlap: bool = False) -> tuple[list[TagConfig], set[int], int, int]:
    """Up to 11 register tags on 0..160 and random refused addresses. ``overlap``: a tag may
    start inside the previous ones (a uint32 on 10..11 and a uint16 on 11, bit tags of one
    register), several tags may share their first register."""
    n = draw(st.integers(1, 11))
    tags: list[TagConfig] = []
    cursor = 0
    kinds = ["uint16", "uint16", "uint32", "uint64"] + (["bool", "bool"] if overlap else [])
    for i in range(n):
        step = draw(st.integers(-4 if overlap else 0, 14))
        cursor = max(0, cursor + step)
        kind = draw(st.sampled_from(kinds))
        tags.append(tag_at(i, cursor, kind, draw(st.integers(0, 15))))
        if not overlap or draw(st.booleans()):
            cursor += width(tags[-1])
    top = max(t.address + width(t) for t in tags)
    holes = set(draw(st.lists(st.integers(0, top + 2), max_size=8)))
    runs = draw(st.lists(st.tuples(st.integers(0, top), st.integers(1, 12)), max_size=2))
    for start, length in runs:
        holes |= set(range(start, start + length))
    return tags, holes, draw(st.integers(0, 12)), draw(st.integers(4, 60))


def learn_then_check(case: tuple[list[TagConfig], set[int], int, int]) -> None:
    """A hole is learned when a planned request first covers it; a re-plan may bridge a gap
    that was never read, so learning can take a few polls, then the plan is optimal."""
    tags, holes, max_gap, limit = case
    refusals = Refusals(retry_s=600.0)
    learning = []
    for _ in range(6):
        sent, planned = poll_model(tags, holes, refusals, max_gap, limit)
        learning.append(sent != planned)
        if not learning[-1]:
            break
    assert len(learning) <= 5 and not learning[-1]
    assert planned == brute_force_optimum(tags, holes, max_gap, limit)
    sent, again = poll_model(tags, holes, refusals, max_gap, limit)
    assert sent == again == planned  # stable: no more bisection once learned


@settings(max_examples=200, deadline=None)
@given(hole_maps())
def test_once_the_refusals_are_learned_the_plan_has_the_brute_force_optimal_request_count(
    case: tuple[list[TagConfig], set[int], int, int],
) -> None:
    learn_then_check(case)


@settings(max_examples=300, deadline=None)
@given(hole_maps(overlap=True))
def test_with_overlapping_tags_the_learned_plan_is_optimal_too(
    case: tuple[list[TagConfig], set[int], int, int],
) -> None:
    learn_then_check(case)


@pytest.mark.parametrize(
    ("tags", "holes", "want"),
    [  # (address, type) ... ; refused addresses; optimal request count
        ([(10, "uint32"), (11, "uint16"), (13, "uint16")], set(), 1),
        ([(10, "uint32"), (10, "uint16"), (12, "uint16")], {11}, 3),  # uint32 alone, 10|12 cut
        ([(10, "uint32"), (10, "uint16"), (9, "uint16")], {11}, 2),  # 9..10 one block
        ([(4, "bool"), (4, "bool"), (5, "uint16"), (20, "uint64")], {4}, 4),
        ([(0, "uint64"), (1, "bool"), (2, "uint16"), (6, "uint16")], {3}, 3),
    ],
)
def test_overlapping_maps_of_the_brief_have_their_optimum(
    tags: list[tuple[int, str]], holes: set[int], want: int
) -> None:
    case = ([tag_at(i, a, k, i) for i, (a, k) in enumerate(tags)], holes, 10, 125)
    assert brute_force_optimum(*case) == want
    learn_then_check(case)


@settings(max_examples=200, deadline=None)
@given(hole_maps(overlap=True))
def test_a_refused_span_is_narrowed_to_its_first_and_last_refused_address(
    case: tuple[list[TagConfig], set[int], int, int],
) -> None:
    """Holes between tags by binary search, a refused tag's registers one by one: every
    learned span starts and ends on a refused address."""
    tags, holes, max_gap, limit = case
    refusals = Refusals(retry_s=600.0)
    poll_model(tags, holes, refusals, max_gap, limit)
    for span in refusals.spans:
        assert span.start in holes and span.end - 1 in holes


def test_a_read_that_succeeds_carves_itself_out_of_a_tag_refusal() -> None:
    refusals = Refusals(retry_s=600.0)
    refusals.add(RefusedSpan("holding", 0, 20, 2, True, 0.0))
    refusals.add(RefusedSpan("holding", 30, 31, 2, False, 0.0))
    carved = refusals.tag_read_fine("holding", 5, 7)
    assert [(s.start, s.end) for s in carved] == [(5, 7)]
    assert sorted(refusals.ranges()) == [("holding", 0, 5), ("holding", 7, 20),
                                         ("holding", 30, 31)]  # fmt: skip
    for a in [*range(5), *range(7, 20)]:
        refusals.tag_read_fine("holding", a, a + 1)
    assert refusals.ranges() == [("holding", 30, 31)]  # holes only expire


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
