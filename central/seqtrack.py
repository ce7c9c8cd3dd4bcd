"""Per-stream sequence bookkeeping on the platform side: gaps, late fills, duplicates, and
the ranges the gateway itself reported lost.

Sans-I/O and not thread-safe (callers hold their own lock). One state per
(site, gateway, stream), following design/UPLINK.md's seq rules:

- the first record seen sets the baseline (history before it is unknown, not a gap);
- a seq that jumps past ``highest + 1`` is ``new`` and reports the skipped range as a
  :class:`Gap`, remembered as a hole;
- a seq inside a remembered hole is ``late`` (a backlog resend) and shrinks the hole;
- any other seq at or below the highest is a ``duplicate`` (at-least-once delivery: the same
  record id again);
- a ``seq_gap`` event (:meth:`SeqTracker.account`) names seqs the gateway will never send
  (evicted, rolled back by a power cut, lost with a corrupt database): they are *accounted
  for*, not missing. Holes already open lose them; a range above the highest seq (the event
  stream is forwarded before the telemetry backlog, so the report often comes first) is kept
  until the jump over it arrives, which then reports only what is still unaccounted (no
  :class:`Gap` at all when the report covers the whole jump).

At most :data:`MAX_HOLES_PER_STREAM` holes (and as many accounted ranges) are remembered per
stream (the oldest are forgotten, and a record filling one of them then counts as a duplicate),
so a gateway that skips seqs forever cannot grow the tracker without bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

from central.ranges import SeqRanges

__all__ = ["MAX_HOLES_PER_STREAM", "Gap", "SeqTracker", "Verdict"]

MAX_HOLES_PER_STREAM: Final = 1000

Verdict = Literal["new", "late", "duplicate"]


@dataclass(frozen=True, slots=True)
class Gap:
    """Records ``first``..``last`` (inclusive) of one stream were skipped; ``accounted`` of
    them the gateway had already reported lost (``seq_gap``), the rest are :attr:`missing`."""

    stream: str
    first: int
    last: int
    accounted: int = 0

    @property
    def count(self) -> int:
        return self.last - self.first + 1

    @property
    def missing(self) -> int:
        return self.count - self.accounted


def jump_gap(stream: str, first: int, last: int, accounted: SeqRanges) -> Gap | None:
    """The :class:`Gap` of skipping ``first..last`` given what was ``accounted``: None when
    every skipped seq is accounted for."""
    n = accounted.overlap(first, last)
    return None if n == last - first + 1 else Gap(stream, first, last, n)


@dataclass(slots=True)
class _StreamSeq:
    highest: int | None  # None: only seq_gap reports so far, no record
    holes: SeqRanges = field(default_factory=SeqRanges)
    accounted: SeqRanges = field(default_factory=SeqRanges)  # reported lost, above highest


class SeqTracker:
    """Per-(site, gateway, stream) sequence state (see the module docstring)."""

    def __init__(self) -> None:
        self._streams: dict[tuple[str, str, str], _StreamSeq] = {}

    def observe(self, site: str, gateway: str, stream: str, seq: int) -> tuple[Verdict, Gap | None]:
        """Classify one received seq and update the state; the gap it revealed, if any."""
        key = (site, gateway, stream)
        st = self._streams.get(key)
        if st is None or st.highest is None:
            st = st or self._streams.setdefault(key, _StreamSeq(None))
            st.highest = seq
            st.accounted.remove(-(2**63), seq)  # the baseline: nothing before it is missing
            return "new", None
        if seq == st.highest + 1:
            st.highest = seq
            st.accounted.remove(seq, seq)
            return "new", None
        if seq > st.highest:
            gap = jump_gap(stream, st.highest + 1, seq - 1, st.accounted)
            for lo, hi in st.accounted.outside(st.highest + 1, seq - 1):
                st.holes.add(lo, hi)
            st.holes.drop_oldest(MAX_HOLES_PER_STREAM)
            st.accounted.remove(st.highest + 1, seq)
            st.highest = seq
            return "new", gap
        if st.holes.contains(seq):
            st.holes.remove(seq, seq)
            return "late", None
        return "duplicate", None

    def account(self, site: str, gateway: str, stream: str, first: int, last: int) -> int:
        """The gateway reported ``first..last`` lost (a ``seq_gap`` event): accounted for, not
        missing. Returns how many of them were newly accounted."""
        st = self._streams.setdefault((site, gateway, stream), _StreamSeq(None))
        top = st.highest
        n = 0
        if top is not None and first <= top:  # holes already open lose them
            n += st.holes.overlap(first, min(last, top))
            st.holes.remove(first, min(last, top))
        lo = first if top is None else max(first, top + 1)
        if lo <= last:  # ahead of the records: kept until the jump over them arrives
            n += sum(b - a + 1 for a, b in st.accounted.outside(lo, last))
            st.accounted.add(lo, last)
            st.accounted.drop_oldest(MAX_HOLES_PER_STREAM)
        return n

    def missing(self, site: str, gateway: str, stream: str) -> list[tuple[int, int]]:
        """Ranges still missing for one stream (ascending, inclusive)."""
        st = self._streams.get((site, gateway, stream))
        return [] if st is None else st.holes.items()
