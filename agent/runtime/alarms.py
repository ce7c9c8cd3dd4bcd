"""Alarm events → alarm records (with stable alarm ids), appended before the poll's telemetry."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from agent.alarm_ids import AlarmIds
from agent.alarm_outputs import AlarmStates
from agent.codec import alarm_body
from agent.logs import kv
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
        self,
        *,
        tags: TagTable,
        alarm_ids: AlarmIds,
        sink: RecordSink,
        stats: RuntimeStats,
        states: AlarmStates | None = None,
        changed: Callable[[], None] | None = None,
    ) -> None:
        self._tags = tags
        self._ids = alarm_ids
        self._sink = sink
        self._stats = stats
        self._states = states  # the alarm outputs' view of active alarms (None: no outputs)
        self._changed = changed

    def record(self, events: Sequence[AlarmEvent]) -> None:
        """Append the events (polls and acknowledgements both come through here), then let
        the alarm outputs see them: the record is durable before a siren changes."""
        if not events:
            return
        self._stats.alarms += len(events)
        self._sink.append(Stream.ALARM, [self.encode(e) for e in events])
        if self._states is not None:
            self._states.apply(events)
            if self._changed is not None:
                self._changed()

    def encode(self, event: AlarmEvent) -> bytes:
        tag = self._tags[event.tag]
        alarm_id = self._ids.for_event(tag.name, event.alarm, event.event, event.ts_ms)
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
