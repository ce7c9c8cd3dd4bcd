"""Alarm events → alarm records (with stable alarm ids), appended before the poll's telemetry.

The alarm state the events leave (:mod:`agent.runtime.alarmstate`) is stored in the same
append as their records.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from agent.codec import alarm_body
from agent.logs import kv
from agent.runtime.alarmstate import AlarmBook
from agent.runtime.sink import RecordSink
from agent.runtime.stats import RuntimeStats
from agent.tags import TagTable
from buffer.record import Stream
from rules.events import AlarmEvent

__all__ = ["AlarmRecorder"]

# The operator-facing alarm line keeps the logger name it has always had (the demo greps it).
log = logging.getLogger("safeedge.pipeline")


class AlarmRecorder:
    """Encodes, logs, counts and appends alarm events (from polls and from commands)."""

    def __init__(
        self, *, tags: TagTable, book: AlarmBook, sink: RecordSink, stats: RuntimeStats
    ) -> None:
        self._tags = tags
        self.book = book
        self._sink = sink
        self._stats = stats

    def record(self, events: Sequence[AlarmEvent]) -> None:
        if not events:
            return
        self._stats.alarms += len(events)
        bodies = [self.encode(e) for e in events]
        self._sink.append(Stream.ALARM, bodies, state=self.book.changes(events))

    def close_removed(self, ts_ms: int) -> int:
        """End the open alarms of tags no longer configured (``clear``, ``config_changed``)."""
        ending, forget = self.book.removed_clears(ts_ms)
        if not ending and not forget:
            return 0
        bodies = []
        for tag, kind, a in ending:
            log.info(kv("alarm", tag=tag, alarm=kind, event="clear", level=0))
            bodies.append(
                alarm_body(
                    tag=tag,
                    alarm=kind,
                    event="clear",
                    level=0,
                    value=None,
                    ts_ms=ts_ms,
                    alarm_id=a.alarm_id or f"{tag}:{kind}:{a.raise_ts_ms}",
                    extra={"reason": "config_changed"},
                )
            )
        self._stats.alarms += len(bodies)
        if bodies:
            self._sink.append(Stream.ALARM, bodies, state=forget)
        return len(bodies)

    def encode(self, event: AlarmEvent) -> bytes:
        tag = self._tags[event.tag]
        alarm_id = self.book.note(event)
        log.info(kv("alarm", tag=tag.name, alarm=event.alarm, event=event.event, level=event.level))
        return alarm_body(
            tag=tag.name,
            alarm=event.alarm,
            event=event.event,
            level=event.level,
            value=event.value,
            ts_ms=event.ts_ms,
            alarm_id=alarm_id,
            extra=event.extra,
        )
