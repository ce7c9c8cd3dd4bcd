"""Structured, escaped and rate-limited log lines of the drivers.

One line per event, ``kind key=value ...``; every value is escaped (control characters,
newlines and ANSI escapes become ``\\xNN``), so text from a device or a port cannot forge a log
line. :class:`RateLimit` lets a noisy event through once per ``every_s`` per key and reports how
many were suppressed in between.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["RateLimit", "escape", "line", "log"]

_SAFE = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)}


def escape(value: object) -> str:
    text = str(value)
    if len(text) > 200:
        text = text[:200] + "..."
    text = text.translate(_SAFE)
    if not text or " " in text or "=" in text or '"' in text:
        text = '"' + text.replace('"', '\\"') + '"'
    return text


def line(event: str, /, **fields: object) -> str:
    return " ".join([event, *(f"{k}={escape(v)}" for k, v in fields.items())])


def log(logger: logging.Logger, level: int, event: str, /, **fields: object) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, "%s", line(event, **fields))


class RateLimit:
    """At most one line per key per ``every_s`` (monotonic clock injectable)."""

    def __init__(self, every_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def allow(self, key: str) -> int | None:
        """None: suppress; else the number suppressed since the last line."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.every_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._suppressed.pop(key, 0)
