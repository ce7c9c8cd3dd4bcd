"""Records as the buffer stores them: it never interprets payloads."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Record", "Stream"]


class Stream(enum.IntEnum):
    """Streams in priority order (lower value leased first).

    ``INCIDENT`` holds the incident recorder's windows (agent/review/recorder.py): a local
    record for review, not part of the uplink contract, so :meth:`Store.lease` never hands it
    out. Like alarms and events, undelivered incident records are never evicted.
    """

    ALARM = 0
    EVENT = 1
    TELEMETRY = 2
    INCIDENT = 3

    @property
    def wire_name(self) -> str:
        return self.name.lower()

    @property
    def forwarded(self) -> bool:
        """Whether the uplink carries this stream (``incident`` stays local)."""
        return self is not Stream.INCIDENT


@dataclass(frozen=True, slots=True)
class Record:
    """A stored record. ``seq`` is per stream, starts at 1, never reused."""

    stream: Stream
    seq: int
    created_ms: int
    payload: bytes
