"""Alarm events → alarm records (with stable alarm ids), appended before the poll's telemetry."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from agent.alarm_ids import AlarmIds
from agent.alarm_outputs import AlarmStates
from agent.codec import alarm_body
from agent.logs import kv
from agent.runtime.shelving import Shelving
from agent.runtime.sink import RecordSink
from agent.runtime.stats import RuntimeStats
from agent.tags import TagTable
from buffer.record import Stream
from rules.events import AlarmEvent

__all__ = ["AlarmObserver", "AlarmRecorder"]

AlarmObserver = Callable[[Sequence[AlarmEvent]], None]
"""Told of every recorded batch of events right after its append (the local console)."""

# The operator-facing alarm line keeps the logger name it has always had (the demo greps it).
log = logging.getLogger("safeedge.pipeline")


class AlarmRecorder:
    """Encodes, logs, counts and appends alarm events (from polls and from commands).

    ``shelving`` (set by the console when enabled) marks the records of shelved alarms with
    ``shelved: true``; ``observers`` are called after each append, on the event loop thread.
    """

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
        self._shelving: Shelving | None = None
        self.observers: list[AlarmObserver] = []

    @property
    def shelving(self) -> Shelving | None:
        return self._shelving

    @shelving.setter
    def shelving(self, shelving: Shelving | None) -> None:
        """Attach the console's shelves: shelved alarms are marked in their records and do not
        drive the alarm outputs (ISA-18.2); a shelf that starts or ends re-decides them."""
        self._shelving = shelving
        if self._states is None or shelving is None:
            return
        names = self._tags.names
        self._states.suppressed = lambda tag, kind: shelving.is_shelved(names[tag], kind)
        shelving.on_change = self._changed

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
        for observe in self.observers:
            observe(events)

    def encode(self, event: AlarmEvent) -> bytes:
        tag = self._tags[event.tag]
        alarm_id = self._ids.for_event(tag.name, event.alarm, event.event, event.ts_ms)
        log.info(kv("alarm", tag=tag.name, alarm=event.alarm, event=event.event, level=event.level))
        extra = event.extra
        if self.shelving is not None and self.shelving.is_shelved(tag.name, event.alarm):
            extra = {**extra, "shelved": True}
        return alarm_body(
            tag=tag.name,
            alarm=event.alarm,
            event=event.event,
            level=event.level,
            value=event.value,
            ts_ms=event.ts_ms,
            alarm_id=alarm_id,
            extra=extra,
        )
