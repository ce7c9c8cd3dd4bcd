"""The incident recorder: full-resolution windows around level-2 alarms, as sealed records.

Sans-I/O: the runtime feeds every polled batch (the columns of a ``SampleBatch``) together with
the alarm events the engine produced for it, and appends the returned bodies to the buffer's
``incident`` stream. Telemetry thinning (report-by-exception, batching) happens elsewhere and
never affects what is fed here.

Invariants:
- Pre-trigger ring: the last ``pre_s`` of samples of every tag that can be part of an incident
  are kept in memory (time-bounded, and at most ``max_ring_points`` points in all: beyond it
  the oldest are dropped and counted in ``ring_dropped``).
- An incident opens on an event that raises or escalates an alarm to one of ``levels`` on a
  trigger tag (``tags``, or every tag) that is not already part of an open incident. Its tags
  are the trigger, its device's tags (``related = "device"``) and every ``groups`` entry
  holding the trigger. Opening emits an ``open`` record, then the ring's samples of those tags
  from ``pre_s`` before the trigger on (the triggering batch included).
- While open, each fed batch emits one ``samples`` record with its samples of the incident's
  tags and one ``alarms`` record with their events (when there are any).
- Its alarms are the trigger's and every alarm of its tags raised or escalated while it is
  open (an alarm that was standing before, e.g. a stuck sensor, does not hold it open). It
  closes (``close`` record) when none of its alarms has been active for ``post_s`` (active:
  raised, escalated or deescalated and not yet returned or cleared), or ``max_s`` after it
  opened, whichever comes first; :meth:`close_all` closes what is open at shutdown.
- Times come from the samples and events (no clock of its own): a replayed history gives the
  same records.

Record bodies (JSON; ``points`` rows as in telemetry: ``[tag, ts, value, quality?]``)::

    {"type": "open", "incident", "opened_ms", "trigger": {tag, alarm, event, level, value},
     "tags": [...], "units": {...}, "limits": {tag: {high, high_high, ...}},
     "active": [[tag, alarm, level, since_ms], ...], "pre_s", "post_s", "max_s"}
    {"type": "samples", "incident", "points": [...]}
    {"type": "alarms", "incident", "events": [{ts_ms, tag, alarm, event, level, value, ...}]}
    {"type": "close", "incident", "closed_ms", "reason": "all_clear" | "max_duration" | "stopped"}
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import msgspec
import numpy as np
from numpy.typing import NDArray

from agent.review.config import RecorderConfig
from drivers import Quality
from rules.events import AlarmEvent

__all__ = ["IncidentRecorder"]

_QUALITY_NAMES: Final = {int(q): q.wire_name for q in Quality}
_MAX_POINTS_PER_RECORD: Final = 5000
_ACTIVE_EVENTS: Final = frozenset(("raise", "escalate", "deescalate"))
_ENDING_EVENTS: Final = frozenset(("clear", "return"))
_encode: Final = msgspec.json.Encoder().encode


@dataclass(slots=True)
class _Incident:
    id: str
    opened_ms: int
    tags: NDArray[np.int32]
    tag_set: frozenset[int]
    alarms: set[tuple[int, str]] = field(default_factory=set)  # (tag, kind): its alarms
    quiet_since: int | None = None  # ts from which none of its alarms was active
    events: list[dict[str, str | float | None]] = field(default_factory=list)


class IncidentRecorder:
    """One per agent; not thread-safe (the runtime's loop thread feeds it)."""

    def __init__(
        self,
        *,
        config: RecorderConfig,
        tag_names: Sequence[str],
        devices: Sequence[str],
        units: Sequence[str] | None = None,
        limits: Mapping[str, Mapping[str, float]] | None = None,
    ) -> None:
        """``devices[i]`` is the device of tag ``i``; ``limits`` the rule limits per tag name
        (written into each incident so its report needs no config). Raises ``ValueError`` for
        a ``tags``/``groups`` name that is not in ``tag_names``."""
        if len(devices) != len(tag_names):
            raise ValueError("devices must name one device per tag")
        self._cfg = config
        self._names = tuple(tag_names)
        self._units = tuple(units) if units is not None else ("",) * len(tag_names)
        self._limits = {k: dict(v) for k, v in (limits or {}).items()}
        index = {n: i for i, n in enumerate(self._names)}
        for where, names in (
            ("review.recorder.tags", config.tags or ()),
            *(("review.recorder.groups", g) for g in config.groups),
        ):
            unknown = [n for n in names if n not in index]
            if unknown:
                raise ValueError(f"{where}: unknown tag(s) {unknown}")
        n = len(self._names)
        self._trigger = np.zeros(n, bool)
        if config.tags is None:
            self._trigger[:] = True
        else:
            self._trigger[[index[t] for t in config.tags]] = True
        self._related: list[frozenset[int]] = []
        for i in range(n):
            rel = {i}
            if config.related == "device":
                rel.update(j for j in range(n) if devices[j] == devices[i])
            for group in config.groups:
                if self._names[i] in group:
                    rel.update(index[g] for g in group)
            self._related.append(frozenset(rel))
        self._watched = np.zeros(n, bool)
        for i in np.flatnonzero(self._trigger).tolist():
            self._watched[list(self._related[i])] = True
        self._pre_ms = int(config.pre_s * 1000)
        self._post_ms = int(config.post_s * 1000)
        self._max_ms = int(config.max_s * 1000)
        self._levels = frozenset(config.levels)
        self._ring: list[
            tuple[NDArray[np.int32], NDArray[np.int64], NDArray[np.float64], NDArray[np.uint8]]
        ] = []
        self._ring_points = 0
        self.ring_dropped = 0
        """Samples dropped from the pre-trigger ring because of ``max_ring_points``."""
        self._active: dict[tuple[int, str], tuple[int, int]] = {}  # (tag, kind) → level, since
        self._open: list[_Incident] = []

    @property
    def ring_points(self) -> int:
        """Samples held in the pre-trigger ring now."""
        return self._ring_points

    @property
    def open_incidents(self) -> list[str]:
        return [inc.id for inc in self._open]

    def feed(
        self,
        tag: NDArray[np.int32],
        ts_ms: NDArray[np.int64],
        value: NDArray[np.float64],
        quality: NDArray[np.uint8],
        events: Sequence[AlarmEvent],
    ) -> list[bytes]:
        """One polled batch and its events (in the engine's order); the bodies to append."""
        out: list[bytes] = []
        keep = self._watched[tag]
        chunk = (
            tag[keep].astype(np.int32),
            ts_ms[keep].astype(np.int64),
            value[keep].astype(np.float64),
            quality[keep].astype(np.uint8),
        )
        if chunk[0].shape[0]:
            self._ring.append(chunk)
            self._ring_points += chunk[0].shape[0]
        for inc in self._open:
            sel = np.isin(chunk[0], inc.tags)
            out += self._samples(inc.id, chunk[0][sel], chunk[1][sel], chunk[2][sel], chunk[3][sel])
        for ev in events:
            self._on_event(ev, out)
        for inc in self._open:
            if inc.events:
                out.append(_encode({"type": "alarms", "incident": inc.id, "events": inc.events}))
                inc.events = []
        now = max(
            int(chunk[1].max()) if chunk[1].shape[0] else -(2**62),
            int(ts_ms.max()) if ts_ms.shape[0] else -(2**62),
            max((e.ts_ms for e in events), default=-(2**62)),
        )
        still: list[_Incident] = []
        for inc in self._open:
            if inc.quiet_since is not None and now - inc.quiet_since >= self._post_ms:
                out.append(self._close(inc, inc.quiet_since + self._post_ms, "all_clear"))
            elif now - inc.opened_ms >= self._max_ms:
                out.append(self._close(inc, inc.opened_ms + self._max_ms, "max_duration"))
            else:
                still.append(inc)
        self._open = still
        self._prune(now)
        return out

    def close_all(self, now_ms: int, reason: str = "stopped") -> list[bytes]:
        """Close every open incident (at shutdown); the bodies to append."""
        out = [self._close(inc, now_ms, reason) for inc in self._open]
        self._open = []
        return out

    # -- internals -------------------------------------------------------------------------

    def _on_event(self, ev: AlarmEvent, out: list[bytes]) -> None:
        key = (ev.tag, ev.alarm)
        if ev.event in _ACTIVE_EVENTS:
            since = self._active.get(key, (0, ev.ts_ms))[1]
            self._active[key] = (ev.level, since)
        elif ev.event in _ENDING_EVENTS:
            self._active.pop(key, None)
        doc = {
            "ts_ms": ev.ts_ms,
            "tag": self._names[ev.tag],
            "alarm": ev.alarm,
            "event": ev.event,
            "level": ev.level,
            "value": _finite(ev.value),
            **{k: (v if isinstance(v, str) else _finite(v)) for k, v in ev.extra.items()},
        }
        joined = False
        for inc in self._open:
            if ev.tag in inc.tag_set:
                inc.events.append(doc)
                joined = True
                if ev.event in ("raise", "escalate"):
                    inc.alarms.add(key)
                busy = any(a in self._active for a in inc.alarms)
                inc.quiet_since = None if busy else (inc.quiet_since or ev.ts_ms)
        opens = ev.event in ("raise", "escalate") and ev.level in self._levels
        if opens and not joined and self._trigger[ev.tag]:
            inc = self._open_incident(ev, out)
            inc.events.append(doc)
            inc.alarms.add(key)

    def _open_incident(self, ev: AlarmEvent, out: list[bytes]) -> _Incident:
        tags = np.array(sorted(self._related[ev.tag]), dtype=np.int32)
        stamp = dt.datetime.fromtimestamp(ev.ts_ms / 1000, tz=dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        inc = _Incident(f"{stamp}-{self._names[ev.tag]}", ev.ts_ms, tags, frozenset(tags.tolist()))
        names = [self._names[i] for i in tags.tolist()]
        active = sorted(
            [self._names[t], kind, level, since]
            for (t, kind), (level, since) in self._active.items()
            if t in inc.tag_set
        )
        out.append(
            _encode(
                {
                    "type": "open",
                    "incident": inc.id,
                    "opened_ms": ev.ts_ms,
                    "trigger": {
                        "tag": self._names[ev.tag],
                        "alarm": ev.alarm,
                        "event": ev.event,
                        "level": ev.level,
                        "value": _finite(ev.value),
                    },
                    "tags": names,
                    "units": {n: self._units[i] for n, i in zip(names, tags.tolist(), strict=True)},
                    "limits": {n: self._limits[n] for n in names if n in self._limits},
                    "active": active,
                    "pre_s": self._cfg.pre_s,
                    "post_s": self._cfg.post_s,
                    "max_s": self._cfg.max_s,
                }
            )
        )
        if self._ring:
            t, ts, v, q = (np.concatenate([c[k] for c in self._ring]) for k in range(4))
            sel = np.isin(t, tags) & (ts >= ev.ts_ms - self._pre_ms)
            out += self._samples(inc.id, t[sel], ts[sel], v[sel], q[sel])
        self._open.append(inc)
        return inc

    def _samples(
        self,
        incident: str,
        tag: NDArray[np.int32],
        ts: NDArray[np.int64],
        value: NDArray[np.float64],
        quality: NDArray[np.uint8],
    ) -> list[bytes]:
        names, qn = self._names, _QUALITY_NAMES
        points: list[list[object]] = []
        for t, s, v, q in zip(
            tag.tolist(), ts.tolist(), value.tolist(), quality.tolist(), strict=True
        ):
            row: list[object] = [names[t], s, v if math.isfinite(v) else None]
            if q:
                row.append(qn.get(q, str(q)))
            points.append(row)
        return [
            _encode(
                {
                    "type": "samples",
                    "incident": incident,
                    "points": points[i : i + _MAX_POINTS_PER_RECORD],
                }
            )
            for i in range(0, len(points), _MAX_POINTS_PER_RECORD)
        ]

    def _close(self, inc: _Incident, at_ms: int, reason: str) -> bytes:
        return _encode({"type": "close", "incident": inc.id, "closed_ms": at_ms, "reason": reason})

    def _prune(self, now: int) -> None:
        horizon = now - self._pre_ms
        while self._ring and int(self._ring[0][1].max()) < horizon:
            self._ring_points -= self._ring.pop(0)[0].shape[0]
        while self._ring_points > self._cfg.max_ring_points and len(self._ring) > 1:
            dropped = self._ring.pop(0)[0].shape[0]
            self._ring_points -= dropped
            self.ring_dropped += dropped


def _finite(x: float | str | None) -> float | str | None:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x
