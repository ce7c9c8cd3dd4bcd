"""Structured, rate-limited logging for the agent.

Lines are ``TIME LEVEL logger event key=value ...``; events name what happened
(``device_lost``), fields carry the data. Nothing is logged per sample: callers log state
changes, and :class:`RateLimiter` folds repeats of one key into a count.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

__all__ = ["RateLimiter", "kv", "setup_logging"]


def kv(what: str, /, **fields: object) -> str:
    """Format one structured log message."""
    parts = [what]
    for key, value in fields.items():
        text = str(value)
        if not text or any(c in text for c in ' ="'):
            text = '"' + text.replace('"', '\\"') + '"'
        parts.append(f"{key}={text}")
    return " ".join(parts)


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
        force=True,
    )
    # pymodbus logs every failed (re)connect; the drivers report device_lost/restored once.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


class RateLimiter:
    """Allows one log line per key per ``interval_s``; counts what it suppressed."""

    def __init__(self, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self._interval = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def allow(self, key: str) -> tuple[bool, int]:
        """Return (may log now, how many were suppressed since the last allowed line)."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False, 0
        self._last[key] = now
        return True, self._suppressed.pop(key, 0)
