"""Block-read planning: coalesce a device's tags into as few Modbus requests as possible.

Pure function, no I/O. Per table (holding, input, coil, discrete), tags are sorted by address
and grouped greedily: a tag joins the current request when the hole before it is at most
``max_gap`` addresses and the request still spans at most ``max_registers`` registers
(``max_bits`` bits for coils / discrete inputs). This is the minimum number of requests among
all plans, not only those that group tags in address order, also when tags overlap (a
``uint32`` on 10..11 and a ``uint16`` on 11, bit tags of one register): a tag that does not fit
the current request for its length lies past the request's limit, and every later tag that
would still fit lies inside it, so it is read by that tag's request anyway; a gap too wide or a
hole stops every later tag too. tests/drivers/test_refusals.py checks it against a brute-force
set cover over every grouping.

Exclusions: ``excluded`` lists address ranges ``(table, start, end)`` (end exclusive) that no
request may cover beyond the tags that live there: a request never bridges a gap through an
excluded address, and a tag that overlaps an excluded range is read alone (its own registers
only). ``alone`` names more tags (by position) to read alone. Both come from the device config
(``exclude``) and from addresses the device refused at run time (see :mod:`drivers.modbus`).
The greedy plan stays minimal under these constraints: an excluded address or an alone tag is a
hard cut, and between cuts the argument above holds.

Invariants (tested):
- every tag is in exactly one request, and its whole value lies inside that request: a
  multi-register value is never split;
- no request is longer than its table's limit;
- requests are ordered by table, then address; a request's points are ordered by address.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from drivers.codec import BIT_TABLES, check_tag, word_count
from drivers.config import Table, TagConfig
from drivers.errors import DriverConfigError

__all__ = [
    "MAX_BITS",
    "MAX_REGISTERS",
    "AddressRange",
    "PlannedPoint",
    "ReadRequest",
    "plan_reads",
]

MAX_REGISTERS = 125  # Modbus limit for FC03/FC04
MAX_BITS = 2000  # Modbus limit for FC01/FC02
_TABLE_ORDER: tuple[Table, ...] = ("holding", "input", "coil", "discrete")

AddressRange = tuple[Table, int, int]  # (table, first address, end address exclusive)


@dataclass(frozen=True, slots=True)
class PlannedPoint:
    """One tag inside a request: ``tag`` is its position in the device's tag list."""

    tag: int
    offset: int  # from the request's first address
    width: int  # registers (1 for bits)


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One block read: ``count`` registers/bits of ``table`` starting at ``address``."""

    table: Table
    address: int
    count: int
    points: tuple[PlannedPoint, ...]

    @property
    def is_bits(self) -> bool:
        return self.table in BIT_TABLES


def _width(tag: TagConfig) -> int:
    return 1 if tag.table in BIT_TABLES else word_count(tag.type)


def plan_reads(
    tags: Sequence[TagConfig],
    *,
    max_registers: int = MAX_REGISTERS,
    max_bits: int = MAX_BITS,
    max_gap: int = 10,
    excluded: Sequence[AddressRange] = (),
    alone: Collection[int] = (),
) -> tuple[ReadRequest, ...]:
    """Plan the block reads covering ``tags`` (see the module docstring for the contract).

    Raises :class:`DriverConfigError` when a limit is out of range or a tag cannot fit in any
    request (a float64 with ``max_registers < 4``, a non-bool on a coil table...).
    """
    if not 1 <= max_registers <= MAX_REGISTERS:
        raise DriverConfigError(f"max_registers must be 1..{MAX_REGISTERS}, not {max_registers}")
    if not 1 <= max_bits <= MAX_BITS:
        raise DriverConfigError(f"max_bits must be 1..{MAX_BITS}, not {max_bits}")
    if max_gap < 0:
        raise DriverConfigError(f"max_gap must be >= 0, not {max_gap}")
    for tag in tags:
        check_tag(tag)
        if _width(tag) > max_registers:
            raise DriverConfigError(
                f"tag {tag.name!r}: a {tag.type} needs {_width(tag)} registers but the device "
                f"allows {max_registers} per request; raise max_registers"
            )
    requests: list[ReadRequest] = []
    for table in _TABLE_ORDER:
        limit = max_bits if table in BIT_TABLES else max_registers
        holes = sorted((s, e) for t, s, e in excluded if t == table and e > s)
        single = set(alone)
        members = []
        for i, t in enumerate(tags):
            if t.table != table:
                continue
            if i in single or _hits(holes, t.address, t.address + _width(t)):
                requests.append(_request(table, t.address, t.address + _width(t), [i], tags))
            else:
                members.append(i)
        members.sort(key=lambda i: (tags[i].address, _width(tags[i]), i))
        group: list[int] = []
        start = end = 0  # current request spans [start, end)
        for i in members:
            a, w = tags[i].address, _width(tags[i])
            fits = a - end <= max_gap and max(end, a + w) - start <= limit
            if group and fits and not _hits(holes, end, a):
                group.append(i)
                end = max(end, a + w)
                continue
            if group:
                requests.append(_request(table, start, end, group, tags))
            group, start, end = [i], a, a + w
        if group:
            requests.append(_request(table, start, end, group, tags))
    order = {t: k for k, t in enumerate(_TABLE_ORDER)}
    return tuple(sorted(requests, key=lambda r: (order[r.table], r.address, r.count)))


def _hits(holes: Sequence[tuple[int, int]], start: int, end: int) -> bool:
    """Does ``[start, end)`` overlap any of the sorted ``holes``?"""
    return any(s < end and start < e for s, e in holes)


def _request(
    table: Table, start: int, end: int, group: list[int], tags: Sequence[TagConfig]
) -> ReadRequest:
    points = tuple(PlannedPoint(i, tags[i].address - start, _width(tags[i])) for i in group)
    return ReadRequest(table=table, address=start, count=end - start, points=points)
