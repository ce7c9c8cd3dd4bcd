"""Telemetry shaping before the buffer: report-by-exception and batching into records.

Sans-I/O; used by the pipeline on the event loop thread. The wire body stays the contract's
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

from agent.codec import telemetry_body

__all__ = ["ExceptionFilter", "PointTuple", "TelemetryBatcher"]

PointTuple = tuple[str, int, float | None, str | None]
_OVERHEAD: Final = len(b'{"points":[]}')


class ExceptionFilter:
    """Per-tag report-by-exception state (see the module docstring).

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
        second sample with the first one when that one was reported.
        """
        out = np.zeros(len(tag), dtype=bool)
        for i in range(len(tag)):  # batches are one poll: tens to hundreds of samples
            t = int(tag[i])
            q = int(quality[i])
            ts = int(ts_ms[i])
            v = float(value[i])
            report = (
                not self._seen[t]
                or q != self._quality[t]
                or ts - self._ts[t] >= self._integrity
                or (q == 0 and not abs(v - self._value[t]) <= self._deadband[t])
            )
            if report:
                out[i] = True
                self._seen[t] = True
                self._quality[t] = q
                self._ts[t] = ts
                self._value[t] = v
        self.suppressed += int(len(tag) - out.sum())
        return out


class TelemetryBatcher:
    """Groups points into telemetry bodies of at most ``max_points`` / ``max_bytes``.

    A single point larger than ``max_bytes`` on its own still gets a record of its own (a
    record is never empty and a point is never split or dropped).
    """

    def __init__(self, *, max_points: int, max_bytes: int, linger_ms: int) -> None:
        if max_points < 1 or max_bytes < 64 or linger_ms < 0:
            raise ValueError("max_points >= 1, max_bytes >= 64 and linger_ms >= 0 required")
        self.max_points = max_points
        self.max_bytes = max_bytes
        self.linger_ms = linger_ms
        self._points: list[PointTuple] = []
        self._bytes = _OVERHEAD
        self._since: int | None = None

    @property
    def pending(self) -> int:
        """Points held, not yet in a record."""
        return len(self._points)

    def add(self, points: Sequence[PointTuple], now_ms: int) -> list[bytes]:
        """Add one poll's points; return the bodies that are complete (possibly none)."""
        out: list[bytes] = []
        for point in points:
            size = len(telemetry_body([point])) - _OVERHEAD + 1  # + the separating comma
            if self._points and (
                len(self._points) >= self.max_points or self._bytes + size > self.max_bytes
            ):
                out.append(self._close())
            if not self._points:
                self._since = now_ms
            self._points.append(point)
            self._bytes += size
        if self.linger_ms == 0 and self._points:
            out.append(self._close())
        return out

    def due(self, now_ms: int) -> list[bytes]:
        """The held record when it has lingered ``linger_ms``; else nothing."""
        if self._points and self._since is not None and now_ms - self._since >= self.linger_ms:
            return [self._close()]
        return []

    def flush(self) -> list[bytes]:
        """Whatever is held, as a record (at shutdown)."""
        return [self._close()] if self._points else []

    def _close(self) -> bytes:
        body = telemetry_body(self._points)
        self._points = []
        self._bytes = _OVERHEAD
        self._since = None
        return body
