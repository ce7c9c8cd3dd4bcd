"""Telemetry shaping before the buffer: report-by-exception and batching into records.

Sans-I/O; used by the runtime's ingest on the event loop thread. Both work on a poll's columns
(numpy arrays), not on a Python object per sample. The wire body stays the contract's
``{"points": [[tag, ts, value, quality?], ...]}`` (design/UPLINK.md); this module decides which
samples become points and how points are grouped into records (one record = one message).

Report-by-exception (:class:`ExceptionFilter`), per tag, a sample is reported when any holds:

- it is the tag's first sample since the agent started;
- its quality differs from the last *reported* sample's quality;
- it is good and ``|value - last reported value| > deadband`` (a deadband of 0 reports every
  change; NaN never equals anything, but a non-good sample carries no value to compare);
- ``ts - last reported ts >= integrity_ms``: a flat value is still reported periodically, so
  the platform can tell "unchanged" from "gateway silent".

Alarms are never affected: the rule engine sees every sample before this filter runs.

Batching (:class:`TelemetryBatcher`): points accumulate into at most ``max_points`` points and
``max_bytes`` encoded body bytes per record. ``linger_ms`` 0 (the default) closes a record at
the end of every poll: nothing waits in memory, every point is durable as soon as its poll is.
With ``linger_ms`` > 0, points from several polls share a record, which saves envelope bytes;
they are held in memory at most that long, so a crash can lose up to ``linger_ms`` of telemetry
that was never appended (counted nowhere: it never existed durably). That is the trade-off the
setting makes explicit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
from numpy.typing import NDArray

from agent.codec import telemetry_body, telemetry_body_from_rows

__all__ = ["ExceptionFilter", "PointTuple", "TelemetryBatcher", "point_rows"]

PointTuple = tuple[str, int, float | None, str | None]
_OVERHEAD: Final = len(b'{"points":[]}')


class ExceptionFilter:
    """Per-tag report-by-exception state (see the module docstring), vectorised over a poll.

    ``deadband`` holds one absolute deadband per tag index (≥ 0); ``integrity_ms`` > 0.
    """

    def __init__(self, deadband: NDArray[np.float64], integrity_ms: int) -> None:
        if integrity_ms <= 0:
            raise ValueError("integrity_ms must be positive")
        if np.any(~(deadband >= 0)):
            raise ValueError("deadbands must be finite and >= 0")
        n = len(deadband)
        self._deadband = deadband.astype(np.float64, copy=True)
        self._integrity = integrity_ms
        self._value = np.full(n, np.nan)
        self._ts = np.zeros(n, dtype=np.int64)
        self._quality = np.zeros(n, dtype=np.int16)
        self._seen = np.zeros(n, dtype=bool)
        self.suppressed = 0  # samples not reported, since construction

    def select(
        self,
        tag: NDArray[np.int32],
        ts_ms: NDArray[np.int64],
        value: NDArray[np.float64],
        quality: NDArray[np.uint8],
    ) -> NDArray[np.bool_]:
        """The mask of samples to report; updates the state as if they were reported.

        Samples are processed in order, so a tag appearing twice in one batch compares its
        second sample with the first one when that one was reported. Vectorised in rounds: round
        ``k`` holds every tag's ``k``-th sample of the batch, so within a round tags are unique
        and each round sees the state the earlier rounds left (a poll is usually one round).
        """
        n = len(tag)
        out = np.zeros(n, dtype=bool)
        if n == 0:
            return out
        order = np.argsort(tag, kind="stable")
        sorted_tag = tag[order]
        first = np.empty(n, dtype=bool)
        first[0] = True
        np.not_equal(sorted_tag[1:], sorted_tag[:-1], out=first[1:])
        if first.all():  # every tag once: one round over the whole batch
            out[:] = self._round(tag, ts_ms, value, quality)
        else:
            pos = np.arange(n)
            rank_sorted = pos - np.maximum.accumulate(np.where(first, pos, 0))
            rank = np.empty(n, dtype=np.intp)
            rank[order] = rank_sorted
            for k in range(int(rank_sorted.max()) + 1):
                i = np.flatnonzero(rank == k)
                out[i] = self._round(tag[i], ts_ms[i], value[i], quality[i])
        self.suppressed += int(n - np.count_nonzero(out))
        return out

    def _round(
        self,
        t: NDArray[np.int32],
        ts: NDArray[np.int64],
        v: NDArray[np.float64],
        quality: NDArray[np.uint8],
    ) -> NDArray[np.bool_]:
        """Report mask for samples of distinct tags; stores the reported ones as the state."""
        q = quality.astype(np.int16)
        with np.errstate(invalid="ignore"):  # inf - inf is NaN, which reports: no warning
            moved = (q == 0) & ~(np.abs(v - self._value[t]) <= self._deadband[t])
        report: NDArray[np.bool_] = (
            ~self._seen[t] | (q != self._quality[t]) | (ts - self._ts[t] >= self._integrity) | moved
        )
        r = t[report]
        self._seen[r] = True
        self._quality[r] = q[report]
        self._ts[r] = ts[report]
        self._value[r] = v[report]
        return report


def point_rows(points: Sequence[PointTuple]) -> list[bytes]:
    """Encoded rows of points given as tuples (the same bytes :func:`telemetry_body` writes)."""
    return [telemetry_body([p])[_ROW] for p in points]


_ROW: Final = slice(len(b'{"points":['), -len(b"]}"))


class TelemetryBatcher:
    """Groups encoded point rows into telemetry bodies of at most ``max_points`` / ``max_bytes``.

    A single point larger than ``max_bytes`` on its own still gets a record of its own (a
    record is never empty and a point is never split or dropped). A record is closed when the
    next point would not fit, so the cut points are those of adding points one at a time; they
    are found per record with a cumulative sum, not per point.
    """

    def __init__(self, *, max_points: int, max_bytes: int, linger_ms: int) -> None:
        if max_points < 1 or max_bytes < 64 or linger_ms < 0:
            raise ValueError("max_points >= 1, max_bytes >= 64 and linger_ms >= 0 required")
        self.max_points = max_points
        self.max_bytes = max_bytes
        self.linger_ms = linger_ms
        self._rows: list[bytes] = []
        self._bytes = _OVERHEAD
        self._since: int | None = None

    @property
    def pending(self) -> int:
        """Points held, not yet in a record."""
        return len(self._rows)

    def add(self, points: Sequence[PointTuple], now_ms: int) -> list[bytes]:
        """Add one poll's points given as tuples (tools, tests); see :meth:`add_rows`."""
        return self.add_rows(point_rows(points), now_ms)

    def add_rows(self, rows: list[bytes], now_ms: int) -> list[bytes]:
        """Add one poll's encoded rows; return the bodies that are complete (possibly none)."""
        out: list[bytes] = []
        n = len(rows)
        if n:
            # + 1: the separating comma (the first row's is the body's spare byte, see _OVERHEAD)
            csum = np.cumsum(np.fromiter(map(len, rows), dtype=np.int64, count=n) + 1)
            i = 0
            while i < n:
                base = int(csum[i - 1]) if i else 0
                fit = int(np.searchsorted(csum, base + self.max_bytes - self._bytes, "right"))
                j = max(i, min(fit, i + self.max_points - len(self._rows)))
                if j == i:
                    if self._rows:  # the next point does not fit: close and retry
                        out.append(self._close())
                        continue
                    j = i + 1  # alone and too large: a record of its own
                if not self._rows:
                    self._since = now_ms
                self._rows.extend(rows[i:j])
                self._bytes += int(csum[j - 1]) - base
                i = j
                if i < n:
                    out.append(self._close())
        if self.linger_ms == 0 and self._rows:
            out.append(self._close())
        return out

    def due(self, now_ms: int) -> list[bytes]:
        """The held record when it has lingered ``linger_ms``; else nothing."""
        if self._rows and self._since is not None and now_ms - self._since >= self.linger_ms:
            return [self._close()]
        return []

    def flush(self) -> list[bytes]:
        """Whatever is held, as a record (at shutdown)."""
        return [self._close()] if self._rows else []

    def _close(self) -> bytes:
        body = telemetry_body_from_rows(self._rows)
        self._rows = []
        self._bytes = _OVERHEAD
        self._since = None
        return body
