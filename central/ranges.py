"""Sets of seqs kept as disjoint inclusive ranges (the trackers' bookkeeping).

Sans-I/O, not thread-safe. :class:`SeqRanges` holds ascending, disjoint, non-adjacent ranges
``[lo, hi]``: adding a range merges it with every range it overlaps or touches.
"""

from __future__ import annotations

import bisect

__all__ = ["SeqRanges"]


class SeqRanges:
    """A set of integers as disjoint inclusive ranges, ascending (see the module docstring)."""

    __slots__ = ("_hi", "_lo")

    def __init__(self) -> None:
        self._lo: list[int] = []
        self._hi: list[int] = []

    def __len__(self) -> int:
        """How many ranges (not seqs)."""
        return len(self._lo)

    def __bool__(self) -> bool:
        return bool(self._lo)

    def items(self) -> list[tuple[int, int]]:
        return list(zip(self._lo, self._hi, strict=True))

    def contains(self, seq: int) -> bool:
        i = bisect.bisect_right(self._lo, seq) - 1
        return i >= 0 and seq <= self._hi[i]

    @property
    def top(self) -> int | None:
        """The highest seq in the set (None when empty)."""
        return self._hi[-1] if self._hi else None

    def add(self, lo: int, hi: int) -> None:
        """Add ``lo..hi`` (merging what it overlaps or touches); nothing when ``lo > hi``."""
        if lo > hi:
            return
        i = bisect.bisect_left(self._hi, lo - 1)  # first range that ends at or after lo - 1
        j = bisect.bisect_right(self._lo, hi + 1)  # ranges before j start at or before hi + 1
        if i < j:  # ranges i..j-1 overlap or touch: merge them
            lo, hi = min(lo, self._lo[i]), max(hi, self._hi[j - 1])
        self._lo[i:j] = [lo]
        self._hi[i:j] = [hi]

    def remove(self, lo: int, hi: int) -> None:
        """Remove ``lo..hi`` (splitting a range it falls inside)."""
        if lo > hi:
            return
        keep_lo: list[int] = []
        keep_hi: list[int] = []
        i = bisect.bisect_left(self._hi, lo)  # first range that ends at or after lo
        j = bisect.bisect_right(self._lo, hi)  # ranges before j start at or before hi
        for a, b in zip(self._lo[i:j], self._hi[i:j], strict=True):
            if a < lo:
                keep_lo.append(a)
                keep_hi.append(lo - 1)
            if b > hi:
                keep_lo.append(hi + 1)
                keep_hi.append(b)
        self._lo[i:j] = keep_lo
        self._hi[i:j] = keep_hi

    def overlap(self, lo: int, hi: int) -> int:
        """How many seqs of ``lo..hi`` are in the set."""
        i = bisect.bisect_left(self._hi, lo)
        n = 0
        while i < len(self._lo) and self._lo[i] <= hi:
            n += min(hi, self._hi[i]) - max(lo, self._lo[i]) + 1
            i += 1
        return n

    def outside(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """The pieces of ``lo..hi`` that are not in the set, ascending."""
        out: list[tuple[int, int]] = []
        at = lo
        i = bisect.bisect_left(self._hi, lo)
        while at <= hi and i < len(self._lo) and self._lo[i] <= hi:
            if self._lo[i] > at:
                out.append((at, self._lo[i] - 1))
            at = max(at, self._hi[i] + 1)
            i += 1
        if at <= hi:
            out.append((at, hi))
        return out

    def drop_oldest(self, keep: int) -> None:
        """Forget the lowest ranges so that at most ``keep`` remain."""
        extra = len(self._lo) - keep
        if extra > 0:
            del self._lo[:extra], self._hi[:extra]

    def fill_oldest_hole(self) -> None:
        """Join the two lowest ranges (as if the seqs between them were in the set)."""
        if len(self._lo) >= 2:
            self.add(self._hi[0] + 1, self._lo[1] - 1)
