"""Alarm events → alarm records (with stable alarm ids), appended before the poll's telemetry.

The alarm state the events leave (:mod:`agent.runtime.alarmstate`) is stored in the same
append as their records.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import cast

from agent.alarm_outputs import AlarmStates
from agent.codec import alarm_body
from agent.logs import kv
from agent.runtime.alarmstate import AlarmBook
from agent.runtime.shelving import Shelving
from agent.runtime.sink import RecordSink
from agent.runtime.stats import RuntimeStats
from agent.tags import TagTable
from buffer.record import Stream
from rules.events import AlarmEvent, AlarmKind

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
        book: AlarmBook,
        sink: RecordSink,
        stats: RuntimeStats,
        states: AlarmStates | None = None,
        changed: Callable[[], None] | None = None,
    ) -> None:
        self._tags = tags
        self.book = book
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
        the alarm outputs see them: the record is durable before a siren changes (inside the
        sink's one_transaction: after its commit)."""
        if not events:
            return
        self._stats.alarms += len(events)
        bodies = [self.encode(e) for e in events]
        self._sink.append(Stream.ALARM, bodies, state=self.book.changes(events))
        self._sink.after_commit(lambda: self._recorded(events))

    def _recorded(self, events: Sequence[AlarmEvent]) -> None:
        names = self._tags.names
        for e in events:  # after the commit: a failed one was logged first (store_error)
            log.info(kv("alarm", tag=names[e.tag], alarm=e.alarm, event=e.event, level=e.level))
        if self._states is not None:
            self._states.apply(events)
            if self._changed is not None:
                self._changed()
        for observe in self.observers:
            observe(events)

    def seed_outputs(self) -> int:
        """At start, after the book restored the alarm state: the alarm outputs' view starts
        from the open alarms, so an output in alarm before a restart is in alarm again at once
        (not only at the next event). Returns how many alarms were seeded."""
        if self._states is None:
            return 0
        index = self._tags.index
        opened = [
            (index[a.tag], cast(AlarmKind, a.alarm), a.level, not a.acked)
            for a in self.book.open_alarms()
            if a.tag in index
        ]
        self._states.restore(opened)
        if opened and self._changed is not None:
            self._changed()
        return len(opened)

    def close_removed(self, ts_ms: int) -> int:
        """End the open alarms of tags no longer configured (``clear``, ``config_changed``)."""
        ending, forget = self.book.removed_clears(ts_ms)
        if not ending and not forget:
            return 0
        bodies, lines = [], []
        for tag, kind, a in ending:
            lines.append(kv("alarm", tag=tag, alarm=kind, event="clear", level=0))
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
        for line in lines:  # logged once recorded
            self._sink.after_commit(functools.partial(log.info, line))
        return len(bodies)

    def encode(self, event: AlarmEvent) -> bytes:
        tag = self._tags[event.tag]
        alarm_id = self.book.note(event)
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
