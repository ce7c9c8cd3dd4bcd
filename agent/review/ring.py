"""The incident recorder's pre-trigger ring: preallocated numpy columns, sized from a budget.

One :class:`PointRing` per recorder holds the samples of every watched tag in feed order:

=========  =========  =====
column     dtype      bytes
=========  =========  =====
ts         int64      8
value      float64    8
quality    uint8      1
tag index  uint16     2 (int32, 4 bytes, for more than 65,536 tags)
=========  =========  =====

so **19 bytes per point** (21 with more than 65,536 tags), plus a few bytes per fed batch for
pruning by time. The columns are allocated once (``np.empty``: the kernel backs a page when it
is first written, so a ring that never fills costs what it holds).

Capacity (:func:`ring_plan`): the points the pre-trigger window needs, ``Σ over watched tags
(ceil(pre_s / poll period) + 2)`` (the 2: a batch is dropped whole once its newest sample is
older than the window, so up to one more poll per tag is held), capped by the budget
``ring_mb`` and by ``max_ring_points`` when set. When the cap is below the need, the plan
carries a warning naming the numbers and the pre-trigger window that is then kept.

Invariants: points leave in the order they came (oldest first); a full ring drops its oldest
points to take new ones and counts them in ``dropped``; nothing is allocated after
construction except the arrays :meth:`PointRing.select` returns.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["PointRing", "RingPlan", "bytes_per_point", "ring_plan"]

_MIB = 2**20
_PRUNE_SLACK = 2  # polls per tag held beyond the window (whole-batch pruning, the batch itself)


def bytes_per_point(n_tags: int) -> int:
    """Ring bytes per point for a table of ``n_tags`` tags (see the module docstring)."""
    return 8 + 8 + 1 + (2 if n_tags <= 65536 else 4)


@dataclass(frozen=True, slots=True)
class RingPlan:
    """The ring's size: ``needed`` points for ``pre_s`` (None when the poll periods are not
    known), ``capacity`` points allocated, ``nbytes`` their bytes, ``warning`` when the
    capacity is below the need (its text names the numbers)."""

    pre_s: float
    watched: int
    needed: int | None
    capacity: int
    bytes_per_point: int
    warning: str | None

    @property
    def nbytes(self) -> int:
        return self.capacity * self.bytes_per_point


def ring_plan(
    *,
    pre_s: float,
    ring_mb: float,
    max_points: int | None,
    n_tags: int,
    watched_poll_s: Sequence[float] | None,
    watched: int,
) -> RingPlan:
    """The capacity for ``watched`` tags polled every ``watched_poll_s[i]`` seconds (None:
    unknown, the budget is the capacity)."""
    bpp = bytes_per_point(n_tags)
    budget = max(1, int(ring_mb * _MIB) // bpp)
    cap = budget if max_points is None else min(budget, max_points)
    needed = None
    if watched_poll_s is not None:
        needed = sum(math.ceil(pre_s / p) + _PRUNE_SLACK for p in watched_poll_s)
    capacity = cap if needed is None else max(1, min(cap, needed))
    warning = None
    if needed is not None and needed > cap:
        rate = sum(1.0 / p for p in watched_poll_s or ())
        kept_s = max(0.0, cap / rate - _PRUNE_SLACK * max(watched_poll_s or (0.0,)))
        bound = "max_ring_points" if max_points is not None and max_points < budget else "ring_mb"
        warning = (
            f"review.recorder: pre_s = {pre_s:g} s × {rate:,.1f} samples/s of {watched:,} "
            f"watched tags needs {needed:,} ring points ({needed * bpp / _MIB:,.1f} MiB at "
            f"{bpp} bytes/point), more than {bound} allows ({cap:,} points, "
            f"{cap * bpp / _MIB:,.1f} MiB): the pre-trigger window kept is about {kept_s:,.0f} s; "
            f"raise ring_mb to at least {math.ceil(needed * bpp / _MIB)} or lower pre_s"
        )
    return RingPlan(pre_s, watched, needed, capacity, bpp, warning)


class PointRing:
    """Fixed-capacity columnar ring of (tag, ts, value, quality) points in feed order."""

    def __init__(self, capacity: int, n_tags: int) -> None:
        if capacity < 1:
            raise ValueError("ring capacity must be at least 1 point")
        self.capacity = capacity
        self._tag: NDArray[np.integer] = np.empty(
            capacity, np.uint16 if n_tags <= 65536 else np.int32
        )
        self._ts = np.empty(capacity, np.int64)
        self._value = np.empty(capacity, np.float64)
        self._quality = np.empty(capacity, np.uint8)
        self._start = 0  # index of the oldest point
        self._len = 0
        self._batches: deque[list[int]] = deque()  # [points of it still held, its newest ts]
        self.dropped = 0
        """Points dropped because the ring was full (not those older than the window)."""

    def __len__(self) -> int:
        return self._len

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self._tag, self._ts, self._value, self._quality))

    def push(
        self,
        tag: NDArray[np.int32],
        ts: NDArray[np.int64],
        value: NDArray[np.float64],
        quality: NDArray[np.uint8],
    ) -> None:
        """Append one batch (equal-length columns), dropping the oldest points when full."""
        n = int(tag.shape[0])
        if n == 0:
            return
        cap = self.capacity
        if n > cap:  # only its newest points fit
            self.dropped += n - cap + self._len
            self._start, self._len = 0, 0
            self._batches.clear()
            tag, ts, value, quality = tag[-cap:], ts[-cap:], value[-cap:], quality[-cap:]
            n = cap
        over = self._len + n - cap
        if over > 0:
            self._drop_oldest(over)
            self.dropped += over
        at = (self._start + self._len) % cap
        first = min(n, cap - at)
        for col, src in ((self._tag, tag), (self._ts, ts), (self._value, value)):
            col[at : at + first] = src[:first]
            col[: n - first] = src[first:]
        self._quality[at : at + first] = quality[:first]
        self._quality[: n - first] = quality[first:]
        self._len += n
        self._batches.append([n, int(ts.max())])

    def prune(self, horizon_ms: int) -> None:
        """Drop every batch whose newest point is older than ``horizon_ms``."""
        batches = self._batches
        while batches and batches[0][1] < horizon_ms:
            n = batches.popleft()[0]
            self._start = (self._start + n) % self.capacity
            self._len -= n

    def select(
        self, member: NDArray[np.bool_], from_ms: int
    ) -> tuple[NDArray[np.int32], NDArray[np.int64], NDArray[np.float64], NDArray[np.uint8]]:
        """The held points of the tags where ``member[tag]`` with ``ts >= from_ms``, oldest
        first, as fresh arrays."""
        cap, a = self.capacity, self._start
        spans = [(a, min(a + self._len, cap)), (0, max(0, a + self._len - cap))]
        idx = [
            np.flatnonzero(member[self._tag[lo:hi]] & (self._ts[lo:hi] >= from_ms)) + lo
            for lo, hi in spans
            if hi > lo
        ]
        at = np.concatenate(idx) if idx else np.empty(0, np.intp)
        return (
            self._tag[at].astype(np.int32),
            self._ts[at],
            self._value[at],
            self._quality[at],
        )

    def _drop_oldest(self, k: int) -> None:
        self._start = (self._start + k) % self.capacity
        self._len -= k
        batches = self._batches
        while k:
            head = batches[0]
            if head[0] <= k:
                k -= head[0]
                batches.popleft()
            else:
                head[0] -= k
                k = 0
