"""What a device refused to read, found by bisection, and when to forget it.

Sans-I/O except for :func:`bisect`, which only calls the ``read`` it is given.

A *refused span* is a smallest run of addresses of one table that the device answers with
exception 2 or 3 (illegal data address / value). :func:`bisect` finds them inside one refused
request: it halves the request's tags, reads each half's tight span, and reads the gap between
the halves on its own; a refused gap is narrowed by binary search to the span from its first to
its last refused address (2 log2(gap) reads). A request is only ever split at the gaps between
tags, so "this gap can be bridged or not" is all the planner needs there. A tag refused on its
own is narrowed register by register (at most 4 reads, once per new refusal) to the runs that
are refused: when tags overlap (a ``uint32`` on 10..11 and a ``uint16`` on 10, bit tags sharing
a register) a tag whose own registers read fine must not be cut out of its block because a
wider tag over it is refused. With exactly the refused registers excluded the planner's plan is
optimal. Two kinds:

- ``holds_tag``: the span lies in a tag's own registers (the tags over it are read alone,
  BAD_DEVICE); a read that succeeds over part of it carves that part away
  (:meth:`Refusals.tag_read_fine`), so once the tags read fine alone the span is gone and the
  block merges back on the next poll (a PLC program download refuses for a few seconds);
- a *hole* between tags: planned around; forgotten after ``retry_s`` (:meth:`Refusals.expire`)
  so a hole that got mapped later is read in one block again.

The planner treats every refused span as an exclusion; with exactly the refused addresses
excluded its greedy plan has the optimal request count (tests/drivers/test_refusals.py checks it
against a brute-force optimum).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from drivers.config import Table
from drivers.planner import AddressRange

__all__ = ["BisectResult", "Refusals", "Refused", "RefusedSpan", "Span", "bisect", "merged"]


class Refused(Exception):  # noqa: N818 (a signal, not a failure name)
    """Raised by a ``read`` given to :func:`bisect`: the device refused it with ``code``."""

    def __init__(self, code: int) -> None:
        super().__init__(f"refused with exception {code}")
        self.code = code


@dataclass(frozen=True, slots=True)
class Span:
    """One tag's registers inside a request: ``[start, end)`` and its tag position."""

    tag: int
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class RefusedSpan:
    """``[start, end)`` of ``table`` refused with exception ``code`` (learned at ``since``, a
    monotonic time)."""

    table: Table
    start: int
    end: int
    code: int
    holds_tag: bool
    since: float

    @property
    def range(self) -> AddressRange:
        return (self.table, self.start, self.end)

    def as_dict(self) -> dict[str, object]:
        return {
            "table": self.table,
            "start": self.start,
            "end": self.end,
            "code": self.code,
            "kind": "tag" if self.holds_tag else "hole",
        }


Read = Callable[[int, int], Awaitable[list[int] | list[bool]]]


@dataclass(slots=True)
class BisectResult:
    data: dict[int, list[int] | list[bool]]  # tag position -> its registers / bit
    refused: list[tuple[int, int, int, bool]]  # (start, end, code, holds_tag), merged
    requests: int
    explained: bool  # False: the whole was refused although every piece reads fine


async def bisect(read: Read, spans: Sequence[Span], code: int) -> BisectResult:
    """Isolate the refused addresses of a refused request covering ``spans`` (sorted by start).

    ``read(start, count)`` returns the data or raises :class:`Refused`; any other exception
    (the device stopped answering) propagates. ``code`` is the refusal of the whole request.
    """
    out = BisectResult({}, [], 0, True)
    raw: list[tuple[int, int, int, bool]] = []

    async def attempt(start: int, end: int) -> list[int] | list[bool] | Refused:
        out.requests += 1
        try:
            return await read(start, end - start)
        except Refused as exc:
            return exc

    async def tags(group: Sequence[Span], known: Refused | None) -> bool:
        """Read ``group``; True when something in it is refused."""
        start, end = group[0].start, max(s.end for s in group)
        got = known if known is not None else await attempt(start, end)
        if not isinstance(got, Refused):
            for s in group:
                out.data[s.tag] = got[s.start - start : s.end - start]
            return False
        if len(group) == 1:
            raw.extend(await narrow(start, end, got.code))
            return True
        mid = len(group) // 2
        left, right = group[:mid], group[mid:]
        found = await tags(left, None)
        found |= await tags(right, None)
        gap_start, gap_end = max(s.end for s in left), right[0].start
        if gap_start < gap_end:
            found |= await gap(gap_start, gap_end)
        if not found:  # refused only as a whole (a quantity limit): the caller shortens
            out.explained = False
        return True

    async def narrow(start: int, end: int, code: int) -> list[tuple[int, int, int, bool]]:
        """The refused runs of one refused tag's registers, read one by one (the whole tag
        when every register reads fine alone: the device refuses partial reads)."""
        if end - start == 1:
            return [(start, end, code, True)]
        runs: list[tuple[int, int, int, bool]] = []
        for a in range(start, end):
            got = await attempt(a, a + 1)
            if not isinstance(got, Refused):
                continue
            if runs and runs[-1][1] == a and runs[-1][2] == got.code:
                runs[-1] = (runs[-1][0], a + 1, got.code, True)
            else:
                runs.append((a, a + 1, got.code, True))
        return runs or [(start, end, code, True)]

    async def readable(start: int, end: int) -> bool:
        return start >= end or not isinstance(await attempt(start, end), Refused)

    async def gap(start: int, end: int) -> bool:
        """Read the gap; when refused, binary-search its first and last refused address
        (a prefix or suffix that reads fine stays fine when shortened): 2 log2(n) reads."""
        got = await attempt(start, end)
        if not isinstance(got, Refused):
            return False
        lo, hi = 0, end - start - 1  # the longest readable prefix
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if await readable(start, start + mid) else (lo, mid - 1)
        first = start + lo
        lo, hi = 0, end - first - 1  # the longest readable suffix after ``first``
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if await readable(end - mid, end) else (lo, mid - 1)
        raw.append((first, end - lo, got.code, False))
        return True

    await tags(spans, Refused(code))
    for item in sorted(raw):
        last = out.refused[-1] if out.refused else None
        if last and last[3] == item[3] and last[2] == item[2] and last[1] >= item[0]:
            out.refused[-1] = (last[0], max(last[1], item[1]), last[2], last[3])
        else:
            out.refused.append(item)
    return out


class Refusals:
    """The refused spans of one device, by table (see the module docstring)."""

    def __init__(self, *, retry_s: float) -> None:
        self.retry_s = retry_s
        self.spans: list[RefusedSpan] = []

    def ranges(self) -> list[AddressRange]:
        return [s.range for s in self.spans]

    def add(self, span: RefusedSpan) -> bool:
        """Remember ``span``; False when it was already known."""
        if any(s.range == span.range for s in self.spans):
            return False
        self.spans.append(span)
        return True

    def known(self, table: Table, start: int, end: int) -> bool:
        """Is a refused span of ``table`` known inside ``[start, end)``?"""
        return any(s.table == table and s.start < end and start < s.end for s in self.spans)

    def tag_read_fine(self, table: Table, start: int, end: int) -> list[RefusedSpan]:
        """``[start, end)`` of ``table`` read fine: carve it out of the tag spans it overlaps
        and return the carved parts (what reads again; a span left with nothing is gone)."""
        carved: list[RefusedSpan] = []
        kept: list[RefusedSpan] = []
        for s in self.spans:
            if not (s.holds_tag and s.table == table and s.start < end and start < s.end):
                kept.append(s)
                continue
            carved.append(replace(s, start=max(s.start, start), end=min(s.end, end)))
            if s.start < start:
                kept.append(replace(s, end=start))
            if end < s.end:
                kept.append(replace(s, start=end))
        self.spans = kept
        return carved

    def expire(self, now: float) -> list[RefusedSpan]:
        """Forget holes older than ``retry_s`` (returned), so they are tried again."""
        gone = [s for s in self.spans if not s.holds_tag and now - s.since >= self.retry_s]
        self.spans = [s for s in self.spans if s not in gone]
        return gone


def merged(spans: Sequence[RefusedSpan]) -> list[tuple[Table, int, int]]:
    """``(table, start, end)`` of ``spans`` with touching or overlapping ones joined (for one
    log line per run, however many pieces a poll carved)."""
    out: list[tuple[Table, int, int]] = []
    for s in sorted(spans, key=lambda s: (s.table, s.start, s.end)):
        if out and out[-1][0] == s.table and out[-1][2] >= s.start:
            out[-1] = (s.table, out[-1][1], max(out[-1][2], s.end))
        else:
            out.append((s.table, s.start, s.end))
    return out
