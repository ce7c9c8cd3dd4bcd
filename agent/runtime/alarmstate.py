"""Alarm state that survives restarts and reloads (design/RULES.md 1.1), kept in the buffer.

Invariants:
- The state of a tag is stored under ``alarm:<tag>`` in the same ``Store.append`` as the alarm
  records whose events changed it (:meth:`AlarmBook.changes`), so after a crash the stored
  state and the stored alarm records never disagree. ``b""`` means "no open alarm".
- An occurrence keeps its ``alarm_id`` (``{gateway}:{tag}:{alarm}:{raise ts}``) from ``raise``
  to ``clear``, across restarts; the id is minted only at ``raise`` or for an event of an
  occurrence the book never saw.
- At start (:meth:`AlarmBook.restore`): a tag whose rule parameters are unchanged continues
  from its state; a changed tag ends its open alarms with ``clear(reason=config_changed)`` at
  its first sample (the engine emits them); a tag no longer in the config ends them at once
  (:meth:`removed_clears`, events the caller records).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

from agent.logs import kv
from agent.tags import TagTable
from rules import RuleEngine
from rules.events import AlarmEvent
from rules.state import (
    AlarmState,
    Occurrences,
    StateFormatError,
    TagState,
    decode_state,
    encode_state,
)

__all__ = ["PREFIX", "AlarmBook", "OpenAlarm"]

PREFIX = "alarm:"
log = logging.getLogger("safeedge.pipeline")


class OpenAlarm:
    """One open occurrence as the status shows it."""

    __slots__ = ("acked", "alarm", "alarm_id", "level", "since_ms", "tag")

    def __init__(
        self, *, tag: str, alarm: str, level: int, acked: bool, since_ms: int, alarm_id: str
    ) -> None:
        self.tag, self.alarm, self.level = tag, alarm, level
        self.acked, self.since_ms, self.alarm_id = acked, since_ms, alarm_id


class AlarmBook:
    """The open occurrences of every tag and the bytes to persist when events change them."""

    def __init__(self, *, gateway: str, tags: TagTable, engine: RuleEngine) -> None:
        self._tags = tags
        self._engine = engine
        self._occ = Occurrences(lambda k, kind, ts: f"{gateway}:{tags.names[k]}:{kind}:{ts}")
        self._removed: dict[str, TagState] = {}

    def restore(self, stored: Mapping[str, bytes]) -> int:
        """Restore from ``Store.states(prefix=PREFIX)``; returns the tags restored unchanged.
        A value that cannot be decoded is logged and dropped (the tag starts from level 0)."""
        restored = 0
        for key, raw in stored.items():
            name = key.removeprefix(PREFIX)
            if not raw:
                continue
            try:
                state = decode_state(raw, key)
            except StateFormatError as exc:
                log.error(kv("alarm_state_unreadable", key=key, error=exc))  # noqa: TRY400
                continue
            if name not in self._tags.index:
                if any(a.open for a in state.alarms.values()):
                    self._removed[name] = state
                continue
            k = self._tags.index[name]
            try:
                same = self._engine.restore_state(k, state)
            except ValueError as exc:
                log.error(kv("alarm_state_unreadable", key=key, error=exc))  # noqa: TRY400
                continue
            self._occ.seed(k, state)
            restored += same
            if not same:
                log.warning(kv("alarm_state_config_changed", tag=name))
        return restored

    def removed_clears(
        self, ts_ms: int
    ) -> tuple[list[tuple[str, str, AlarmState]], dict[str, bytes]]:
        """The open alarms of tags no longer configured: (tag, kind, state) to clear now with
        ``reason: "config_changed"``, and the state values that forget them."""
        out = [
            (name, kind, a)
            for name, state in self._removed.items()
            for kind, a in state.alarms.items()
            if a.open
        ]
        forget = {PREFIX + name: b"" for name in self._removed}
        self._removed.clear()
        return out, forget

    def use_engine(self, engine: RuleEngine) -> None:
        """After a reload swapped the engine (same tag table): occurrences stay."""
        self._engine = engine

    def state_of(self, tag: int) -> TagState:
        """The tag's state as it would be persisted now."""
        return self._occ.annotate(tag, self._engine.export_state(tag))

    def note(self, event: AlarmEvent) -> str:
        """Account for one event (in order); returns its alarm id."""
        return self._occ.note(event)

    def changes(self, events: Iterable[AlarmEvent]) -> dict[str, bytes]:
        """The state values of the tags ``events`` touched (after :meth:`note` saw them)."""
        out: dict[str, bytes] = {}
        for k in {e.tag for e in events}:
            state = self._occ.annotate(k, self._engine.export_state(k))
            out[PREFIX + self._tags.names[k]] = encode_state(state) if state.alarms else b""
        return out

    def open_alarms(self) -> Sequence[OpenAlarm]:
        """Every open occurrence (active, or latched and returned unacknowledged)."""
        out = []
        names = self._tags.names
        for k in self._engine.open_tags():  # not export_state per tag: it hashes parameters
            exported = self._engine.export_state(k)
            for kind, a in self._occ.annotate(k, exported).alarms.items():
                out.append(
                    OpenAlarm(
                        tag=names[k],
                        alarm=kind,
                        level=a.level,
                        acked=not a.unacked,
                        since_ms=a.raise_ts_ms,
                        alarm_id=a.alarm_id,
                    )
                )
        return out
