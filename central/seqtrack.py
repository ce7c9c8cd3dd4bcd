"""Per-stream sequence bookkeeping on the platform side: gaps, late fills, duplicates.

Sans-I/O and not thread-safe (callers hold their own lock). One state per
(site, gateway, stream), following design/UPLINK.md's seq rules:

- the first record seen sets the baseline (history before it is unknown, not a gap);
- a seq that jumps past ``highest + 1`` is ``new`` and reports the skipped range as a
  :class:`Gap`, remembered as a hole;
- a seq inside a remembered hole is ``late`` (a backlog resend) and shrinks the hole;
- any other seq at or below the highest is a ``duplicate`` (at-least-once delivery: the same
  record id again).

At most :data:`MAX_HOLES_PER_STREAM` holes are remembered per stream (the oldest are
forgotten, and a record filling one of them then counts as a duplicate), so a gateway that
skips seqs forever cannot grow the tracker without bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

__all__ = ["MAX_HOLES_PER_STREAM", "Gap", "SeqTracker", "Verdict"]

MAX_HOLES_PER_STREAM: Final = 1000

Verdict = Literal["new", "late", "duplicate"]


@dataclass(frozen=True, slots=True)
class Gap:
    """Records ``first``..``last`` (inclusive) of one stream were skipped."""

    stream: str
    first: int
    last: int

    @property
    def count(self) -> int:
        return self.last - self.first + 1


@dataclass(slots=True)
class _StreamSeq:
    highest: int
    holes: list[list[int]] = field(default_factory=list)  # [first, last] ranges, ascending


class SeqTracker:
    """Per-(site, gateway, stream) sequence state (see the module docstring)."""

    def __init__(self) -> None:
        self._streams: dict[tuple[str, str, str], _StreamSeq] = {}

    def observe(self, site: str, gateway: str, stream: str, seq: int) -> tuple[Verdict, Gap | None]:
        """Classify one received seq and update the state; the gap it revealed, if any."""
        key = (site, gateway, stream)
        st = self._streams.get(key)
        if st is None:
            self._streams[key] = _StreamSeq(seq)
            return "new", None
        if seq == st.highest + 1:
            st.highest = seq
            return "new", None
        if seq > st.highest:
            gap = Gap(stream, st.highest + 1, seq - 1)
            st.holes.append([gap.first, gap.last])
            del st.holes[:-MAX_HOLES_PER_STREAM]
            st.highest = seq
            return "new", gap
        for i, (first, last) in enumerate(st.holes):
            if first <= seq <= last:
                parts = [[first, seq - 1], [seq + 1, last]]
                st.holes[i : i + 1] = [p for p in parts if p[0] <= p[1]]
                return "late", None
        return "duplicate", None

    def missing(self, site: str, gateway: str, stream: str) -> list[tuple[int, int]]:
        """Ranges still missing for one stream (ascending, inclusive)."""
        st = self._streams.get((site, gateway, stream))
        return [] if st is None else [(a, b) for a, b in st.holes]
