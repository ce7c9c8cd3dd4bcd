"""Per-device circuit breaker, counted in polls (sans-I/O, no clock).

A device that answers is polled every period. After ``k`` consecutive failed polls the next
``min(2**(k-1) - 1, cap)`` polls are skipped without any I/O (their samples are BAD_COMM), so a
dead device is probed after 1, 2, 4, 8... periods instead of costing a full timeout every period.
``cap + 1`` periods is the longest interval between probes: ``floor(backoff_max_s / period)``.
One successful poll closes the breaker. Counting polls instead of reading a clock keeps the
breaker exact under scheduling jitter and testable without sleeping.
"""

from __future__ import annotations

import math

__all__ = ["Breaker"]


class Breaker:
    """Decides, per poll, whether the device should be talked to at all."""

    def __init__(self, *, poll_interval_s: float, backoff_max_s: float) -> None:
        self._cap = max(0, math.floor(backoff_max_s / poll_interval_s) - 1)
        self.failures = 0  # consecutive failed polls
        self.skipped = 0  # polls skipped since the breaker was created (a counter)
        self._skip_left = 0

    @property
    def open(self) -> bool:
        """True while polls are being skipped."""
        return self._skip_left > 0

    def allow(self) -> bool:
        """Call once per poll: False means skip this poll (and it is counted as skipped)."""
        if self._skip_left > 0:
            self._skip_left -= 1
            self.skipped += 1
            return False
        return True

    def failed(self) -> None:
        """The poll that was allowed could not reach the device."""
        self.failures += 1
        self._skip_left = min(2 ** min(self.failures - 1, 30) - 1, self._cap)

    def succeeded(self) -> None:
        """The device answered (exception responses count: the device is there)."""
        self.failures = 0
        self._skip_left = 0
