"""Block-read planning: coverage, limits, never splitting a value, minimal request count."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.codec import word_count
from drivers.config import DataType, Table, TagConfig
from drivers.errors import DriverConfigError
from drivers.planner import MAX_BITS, plan_reads

REG_TYPES: tuple[DataType, ...] = ("uint16", "int16", "int32", "float32", "float64", "uint64")


def width(tag: TagConfig) -> int:
    return 1 if tag.table in ("coil", "discrete") else word_count(tag.type)


@st.composite
def tag_sets(draw: st.DrawFn, *, max_address: int = 400) -> list[TagConfig]:
    n = draw(st.integers(0, 40))
    tags = []
    for i in range(n):
        table: Table = draw(st.sampled_from(["holding", "input", "coil", "discrete"]))
        data_type: DataType = (
            "bool" if table in ("coil", "discrete") else draw(st.sampled_from(REG_TYPES))
        )
        tags.append(
            TagConfig(
                name=f"t{i}", table=table, type=data_type,
                address=draw(st.integers(0, max_address)),
            )
        )  # fmt: skip
    return tags


def naive_min_requests(tags: Sequence[TagConfig], limit: int, gap: int) -> int:
    """Fewest groups when tags, in address order, are cut into consecutive valid groups."""
    ordered = sorted(tags, key=lambda t: (t.address, width(t)))

    def valid(group: Sequence[TagConfig]) -> bool:
        start, end = group[0].address, group[0].address + width(group[0])
        for t in group[1:]:
            if t.address - end > gap:
                return False
            end = max(end, t.address + width(t))
        return end - start <= limit

    best = [0] + [10**9] * len(ordered)
    for j in range(1, len(ordered) + 1):
        for i in range(j):
            if best[i] + 1 < best[j] and valid(ordered[i:j]):
                best[j] = best[i] + 1
    return best[-1]


@settings(max_examples=150, deadline=None)
@given(tag_sets(), st.integers(4, 125), st.integers(0, 20), st.integers(1, 64))
def test_every_tag_is_read_exactly_once_whole_and_no_request_exceeds_a_limit(
    tags: list[TagConfig], max_registers: int, max_gap: int, max_bits: int
) -> None:
    plan = plan_reads(tags, max_registers=max_registers, max_bits=max_bits, max_gap=max_gap)
    seen = Counter(p.tag for req in plan for p in req.points)
    assert seen == Counter(range(len(tags)))
    for req in plan:
        limit = max_bits if req.is_bits else max_registers
        assert 1 <= req.count <= limit
        covered_end = req.address
        for p in req.points:
            tag = tags[p.tag]
            assert tag.table == req.table
            assert req.address + p.offset == tag.address
            assert p.width == width(tag)
            assert p.offset >= 0
            assert p.offset + p.width <= req.count
            assert tag.address - covered_end <= max_gap  # holes stay within max_gap
            covered_end = max(covered_end, tag.address + p.width)
        assert covered_end == req.address + req.count  # no useless tail


@settings(max_examples=100, deadline=None)
@given(tag_sets(max_address=150), st.integers(4, 40), st.integers(0, 12))
def test_request_count_is_minimal_per_table(
    tags: list[TagConfig], max_registers: int, max_gap: int
) -> None:
    plan = plan_reads(tags, max_registers=max_registers, max_bits=MAX_BITS, max_gap=max_gap)
    for table in ("holding", "input", "coil", "discrete"):
        members = [t for t in tags if t.table == table]
        limit = MAX_BITS if table in ("coil", "discrete") else max_registers
        planned = sum(1 for r in plan if r.table == table)
        assert planned == naive_min_requests(members, limit, max_gap), table


def test_neighbouring_tags_share_one_request_and_a_big_hole_splits_them() -> None:
    tags = [
        TagConfig(name="a", address=0, type="float32"),
        TagConfig(name="b", address=5),  # hole of 3 registers
        TagConfig(name="c", address=30),  # hole of 24
        TagConfig(name="d", table="input", address=0),
    ]
    plan = plan_reads(tags, max_gap=10)
    assert [(r.table, r.address, r.count) for r in plan] == [
        ("holding", 0, 6),
        ("holding", 30, 1),
        ("input", 0, 1),
    ]
    assert [(p.tag, p.offset, p.width) for p in plan[0].points] == [(0, 0, 2), (1, 5, 1)]


def test_max_registers_cuts_before_a_value_rather_than_through_it() -> None:
    tags = [TagConfig(name=f"f{i}", address=2 * i, type="float32") for i in range(3)]
    plan = plan_reads(tags, max_registers=5)
    assert [(r.address, r.count) for r in plan] == [(0, 4), (4, 2)]


def test_a_value_wider_than_max_registers_is_a_config_error() -> None:
    with pytest.raises(DriverConfigError, match="max_registers"):
        plan_reads([TagConfig(name="d", address=0, type="float64")], max_registers=3)


def test_limits_outside_the_modbus_maxima_are_config_errors() -> None:
    with pytest.raises(DriverConfigError):
        plan_reads([], max_registers=126)
    with pytest.raises(DriverConfigError):
        plan_reads([], max_bits=2001)


def test_two_thousand_coils_fit_one_request_and_one_more_needs_another() -> None:
    tags = [TagConfig(name=f"c{i}", table="coil", type="bool", address=i) for i in range(2001)]
    plan = plan_reads(tags)
    assert [(r.address, r.count) for r in plan] == [(0, 2000), (2000, 1)]


@settings(max_examples=150, deadline=None)
@given(
    tag_sets(max_address=150),
    st.lists(st.tuples(st.sampled_from(["holding", "input"]), st.integers(0, 160),
                       st.integers(1, 6)), max_size=5),
    st.sets(st.integers(0, 39), max_size=4),
)  # fmt: skip
def test_excluded_addresses_are_never_bridged_and_alone_tags_get_their_own_request(
    tags: list[TagConfig], holes: list[tuple[Table, int, int]], alone: set[int]
) -> None:
    excluded = [(t, a, a + n) for t, a, n in holes]
    plan = plan_reads(tags, max_gap=12, excluded=excluded, alone=alone)
    assert Counter(p.tag for r in plan for p in r.points) == Counter(range(len(tags)))
    for req in plan:
        hits = any(t == req.table and a < req.address + req.count and req.address < b
                   for t, a, b in excluded)  # fmt: skip
        if hits or any(p.tag in alone for p in req.points):
            assert len(req.points) == 1
            assert req.count == req.points[0].width  # the tag's own registers only


def test_an_excluded_gap_splits_a_block_that_max_gap_would_bridge() -> None:
    tags = [TagConfig(name="a", address=9), TagConfig(name="b", address=20)]
    assert [(r.address, r.count) for r in plan_reads(tags, max_gap=20)] == [(9, 12)]
    plan = plan_reads(tags, max_gap=20, excluded=[("holding", 15, 16)])
    assert [(r.address, r.count) for r in plan] == [(9, 1), (20, 1)]
