"""Persisted alarm state of one tag (design/RULES.md, "State across restarts and reloads").

What is kept: per alarm kind that is not idle, its ``level``, whether it is unacknowledged
(for ``high``/``low``; level 0 and unacknowledged is a latched alarm that returned), the ts of
the occurrence's ``raise``, its ``alarm_id`` (filled in by the agent; the engine knows no ids)
and, for ``fault``, its ``reason``. What is not kept: delay timers and the roc, trend and stuck
windows (they start empty, as at first start).

The format is JSON (msgspec) with defaults everywhere, so a field added later (a ``shelved``
flag, say) reads old records as its default, and an unknown field written by a newer agent
is ignored by an older one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import msgspec

from rules.events import AlarmEvent
from rules.params import ParamValue

__all__ = [
    "AlarmState",
    "Occurrences",
    "StateFormatError",
    "TagState",
    "decode_state",
    "encode_state",
    "params_hash",
]

LEVEL_MAX = {"fault": 1, "high": 2, "low": 2, "roc": 1, "trend_high": 1, "trend_low": 1, "stuck": 1}


class StateFormatError(ValueError):
    """A stored state that cannot be decoded or does not fit the engine (names what)."""


class AlarmState(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    level: int = 0
    unacked: bool = False
    raise_ts_ms: int = 0
    alarm_id: str = ""
    reason: str = ""  # fault only: quality | nan | range

    @property
    def open(self) -> bool:
        """Active, or latched and returned unacknowledged: the occurrence has not cleared."""
        return self.level > 0 or self.unacked


class TagState(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    params_hash: str
    alarms: dict[str, AlarmState] = msgspec.field(default_factory=dict)  # kind → its state


def encode_state(state: TagState) -> bytes:
    return msgspec.json.encode(state)


def decode_state(data: bytes, where: str) -> TagState:
    """Decode and check one stored state; raises :class:`StateFormatError` naming ``where``."""
    try:
        state = msgspec.json.decode(data, type=TagState)
    except msgspec.DecodeError as exc:
        raise StateFormatError(f"{where}: {exc}") from exc
    for kind, alarm in state.alarms.items():
        top = LEVEL_MAX.get(kind)
        if top is None:
            raise StateFormatError(f"{where}: unknown alarm kind {kind!r}")
        if not 0 <= alarm.level <= top:
            raise StateFormatError(f"{where}: {kind}: level {alarm.level} outside 0..{top}")
    return state


def params_hash(values: dict[str, ParamValue]) -> str:
    """A stable hash of one tag's resolved rule parameters (key order does not matter)."""
    canon = sorted((k, list(v) if isinstance(v, tuple) else v) for k, v in values.items())
    return hashlib.sha256(msgspec.json.encode(canon)).hexdigest()[:16]


class Occurrences:
    """The open occurrences the kernel does not describe: per (tag index, kind) the raise ts,
    the alarm id and the fault reason. Fed every event in order (:meth:`note`); an occurrence
    opens at ``raise`` (or at any event of an occurrence it never saw) and ends at ``clear``."""

    def __init__(self, mint: Callable[[int, str, int], str]) -> None:
        """``mint(tag, kind, raise_ts_ms)`` makes the alarm id of a new occurrence."""
        self._mint = mint
        self._open: dict[tuple[int, str], AlarmState] = {}

    def seed(self, tag: int, state: TagState) -> None:
        """Take the open occurrences of a restored (or changed: they end soon) tag's state."""
        for kind, alarm in state.alarms.items():
            if alarm.open:
                self._open[(tag, kind)] = alarm

    def note(self, event: AlarmEvent) -> str:
        """Account for ``event``; returns its occurrence's alarm id."""
        key = (event.tag, event.alarm)
        known = self._open.get(key)
        if event.event == "raise" or known is None:
            reason = event.extra.get("reason", "") if event.alarm == "fault" else ""
            known = AlarmState(
                raise_ts_ms=event.ts_ms,
                alarm_id=self._mint(event.tag, event.alarm, event.ts_ms),
                reason=str(reason),
            )
            self._open[key] = known
        if event.event == "clear":
            del self._open[key]
        return known.alarm_id

    def open_of(self, tag: int) -> dict[str, AlarmState]:
        return {kind: a for (t, kind), a in self._open.items() if t == tag}

    def forget(self, tag: int) -> None:
        for key in [k for k in self._open if k[0] == tag]:
            del self._open[key]

    def annotate(self, tag: int, exported: TagState) -> TagState:
        """``exported`` (the engine's levels) with each open alarm's ts, id and reason."""
        alarms = {}
        for kind, a in exported.alarms.items():
            o = self._open.get((tag, kind))
            if o is not None:
                a = msgspec.structs.replace(
                    a, raise_ts_ms=o.raise_ts_ms, alarm_id=o.alarm_id, reason=o.reason
                )
            alarms[kind] = a
        return TagState(params_hash=exported.params_hash, alarms=alarms)
