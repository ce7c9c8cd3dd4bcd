"""Records as the buffer stores them: it never interprets payloads."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Record", "Stream"]


class Stream(enum.IntEnum):
    """Streams in priority order (lower value leased first)."""

    ALARM = 0
    EVENT = 1
    TELEMETRY = 2

    @property
    def wire_name(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Record:
    """A stored record. ``seq`` is per stream, starts at 1, never reused."""

    stream: Stream
    seq: int
    created_ms: int
    payload: bytes
