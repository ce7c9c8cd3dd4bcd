"""When to talk to a lost device again (sans-I/O; the caller passes the time in).

A device that answers is polled every period. A lost device is *probed*: one cheap request at a
fixed ``probe_interval_s`` (default 2 s), so a device that answers again is back within
``max(poll period, probe interval) + one poll`` — at most ``max(2 x period, probe interval +
period)``. On a shared serial line (RTU, ASCII, or RTU through a serial device server) the probe
interval is at least the device's own period, so probing a dead unit never takes more of the
line than polling it did and its neighbours keep their period.

Back-off applies only to reopening the channel: after a failure to connect or open the port
(``refused``, ``no_route``, ``port_missing``, ``port_busy``) the next try waits ``probe interval
x 2**k``, capped by ``backoff_max_s``. A device whose channel is open but which does not answer
(``timeout``) is probed at the fixed interval.
"""

from __future__ import annotations

__all__ = ["CONNECT_KINDS", "Recovery"]

CONNECT_KINDS = frozenset({"refused", "no_route", "port_missing", "port_busy", "port_settings"})


class Recovery:
    """Per-device probe schedule and outage bookkeeping (times are monotonic seconds)."""

    def __init__(
        self,
        *,
        poll_interval_s: float,
        probe_interval_s: float,
        backoff_max_s: float,
        shared_line: bool,
    ) -> None:
        self.probe_interval_s = (
            max(probe_interval_s, poll_interval_s) if shared_line else probe_interval_s
        )
        self.backoff_max_s = max(backoff_max_s, self.probe_interval_s)
        self.lost_since: float | None = None  # monotonic time of the first failed poll
        self.skipped = 0  # polls answered without I/O while waiting for the next probe
        self.probes = 0  # probes sent while lost
        self._next_try = 0.0
        self._connect_failures = 0

    @property
    def lost(self) -> bool:
        return self.lost_since is not None

    def allow(self, now: float) -> bool:
        """Call once per poll: False means no I/O this poll (counted in ``skipped``)."""
        if self.lost_since is None or now >= self._next_try:
            return True
        self.skipped += 1
        return False

    def failed(self, now: float, kind: str) -> None:
        """The poll could not reach the device, because of ``kind``."""
        if self.lost_since is None:
            self.lost_since = now
        delay = self.probe_interval_s
        if kind in CONNECT_KINDS:
            delay = min(delay * 2 ** min(self._connect_failures, 20), self.backoff_max_s)
            self._connect_failures += 1
        else:
            self._connect_failures = 0
        # a little early rather than a period late: poll times jitter around the schedule
        self._next_try = now + delay - 0.05 * delay

    def succeeded(self, now: float) -> float | None:
        """The device answered; returns the outage in seconds if it was lost."""
        since, self.lost_since = self.lost_since, None
        self._connect_failures = 0
        return None if since is None else now - since
