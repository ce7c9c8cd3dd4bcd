"""Per-device poll figures for status, health and metrics (event loop thread only).

Per poll (never per sample): the poll's duration (a round trip for a polled device: every
request of the cycle, answered or timed out), whether any sample was good (the last good read),
and the worst bad quality of the batch as the last error's reason; the driver's own account of
its last failure (``lost_reason``, ``last_error`` while it is not online) is kept after the
device is back, so the status still says why it went down. Durations are kept in a
ring of the last :data:`WINDOW` polls; percentiles are computed when asked for.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from drivers import Device, Quality, SampleBatch

__all__ = ["WINDOW", "DevicePoll", "DevicePolls"]

WINDOW: Final = 256
_N_Q: Final = max(int(q) for q in Quality) + 1


@dataclass(slots=True)
class DevicePoll:
    polls: int = 0
    durations_s: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    last_good_ms: int | None = None
    last_error: str | None = None  # quality name of the last poll that had a bad sample
    last_error_ms: int | None = None
    bad_polls: int = 0
    # the driver's last failure, kept after recovery: (reason, text, when)
    last_failure: tuple[str, str, int] | None = None
    seen: bool = False  # online at some poll

    def percentile_ms(self, q: float) -> float | None:
        """The ``q``-th percentile of the window's durations, interpolated linearly between
        the two nearest ranks (numpy's default method). Plain Python: at most :data:`WINDOW`
        values, and ``np.percentile`` cost ~1 ms a call (its first call also imports
        ``numpy.ma``) at every status tick."""
        if not self.durations_s:
            return None
        xs = sorted(self.durations_s)
        rank = (len(xs) - 1) * min(max(q, 0.0), 100.0) / 100.0
        lo = int(rank)
        hi = min(lo + 1, len(xs) - 1)
        return (xs[lo] + (xs[hi] - xs[lo]) * (rank - lo)) * 1000.0


class DevicePolls:
    def __init__(self) -> None:
        self.by_name: dict[str, DevicePoll] = {}

    def note(self, device: Device, batch: SampleBatch, seconds: float, now_ms: int) -> None:
        d = self.by_name.get(device.name)
        if d is None:
            d = self.by_name[device.name] = DevicePoll()
        d.polls += 1
        d.durations_s.append(seconds)
        d.seen = d.seen or device.online
        # as for device_lost (agent/runtime/ingest.py): a push device before its first frame
        # (nothing known yet, nothing read) has not failed
        if device.lost_reason and (d.seen or len(batch)):
            d.last_failure = (device.lost_reason, device.last_error or device.lost_reason, now_ms)
        if not len(batch):
            return
        counts = np.bincount(batch.quality, minlength=_N_Q)
        if counts[0]:
            d.last_good_ms = now_ms
        if counts[0] < len(batch):
            worst = int(np.flatnonzero(counts[1:])[0]) + 1  # lowest code first: comm before stale
            d.last_error = Quality(worst).wire_name if worst < _N_Q else f"quality {worst}"
            d.last_error_ms = now_ms
            d.bad_polls += 1
