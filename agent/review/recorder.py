"""The incident recorder: full-resolution windows around level-2 alarms, as sealed records.

Sans-I/O: the runtime feeds every polled batch (the columns of a ``SampleBatch``) together with
the alarm events the engine produced for it, and appends the returned bodies to the buffer's
``incident`` stream. Telemetry thinning (report-by-exception, batching) happens elsewhere and
never affects what is fed here.

Invariants:
- Pre-trigger ring: the last ``pre_s`` of samples of every tag that can be part of an incident
  (its "watched" tags) are kept in memory in one preallocated columnar ring
  (agent/review/ring.py: 19 bytes a point, capacity from ``ring_mb``, ``max_ring_points`` and,
  when the poll periods are given, what ``pre_s`` needs; beyond it the oldest are dropped and
  counted in ``ring_dropped``). Memory otherwise: O(tags) for the tag tables, O(open
  incidents × their tags), O(active alarms); nothing grows with the number of polls.
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
- Restarts: :meth:`state` is the open incidents (id, trigger, its alarms, the newest time fed),
  to be stored with every append of their records (the runtime does, in the same transaction).
  :meth:`restore` at the next start takes it and the alarms active after the engine restored
  its state: an incident one of whose alarms is still active is **resumed** (same id; its
  records continue, the downtime is a gap in its samples); any other is closed with reason
  ``interrupted`` at the newest time fed before the stop. An alarm is active after a restore
  only as the occurrence it was (design/RULES.md 1.1: same ``alarm_id``), so "still active" is
  "the same occurrence".

Record bodies (JSON; ``points`` rows as in telemetry: ``[tag, ts, value, quality?]``)::

    {"type": "open", "incident", "opened_ms", "trigger": {tag, alarm, event, level, value},
     "tags": [...], "units": {...}, "limits": {tag: {high, high_high, ...}},
     "active": [[tag, alarm, level, since_ms], ...], "pre_s", "post_s", "max_s"}
    {"type": "samples", "incident", "points": [...]}
    {"type": "alarms", "incident", "events": [{ts_ms, tag, alarm, event, level, value, ...}]}
    {"type": "close", "incident", "closed_ms",
     "reason": "all_clear" | "max_duration" | "stopped" | "interrupted"}
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
from agent.review.ring import PointRing, RingPlan, ring_plan
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
    trigger: int  # tag index
    tags: NDArray[np.int32]
    tag_set: frozenset[int]
    member: NDArray[np.bool_]  # member[tag]: the tag is one of its tags
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
        poll_s: Sequence[float] | None = None,
    ) -> None:
        """``devices[i]`` is the device of tag ``i``; ``limits`` the rule limits per tag name
        (written into each incident so its report needs no config); ``poll_s[i]`` the poll
        period of tag ``i`` (sizes the ring to what ``pre_s`` needs; without it the ring's
        capacity is the budget). Raises ``ValueError`` for a ``tags``/``groups`` name that
        is not in ``tag_names``."""
        if len(devices) != len(tag_names):
            raise ValueError("devices must name one device per tag")
        if poll_s is not None and len(poll_s) != len(tag_names):
            raise ValueError("poll_s must give one period per tag")
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
        # related tags as device codes and group index arrays: O(tags), not O(tags²)
        codes: dict[str, int] = {}
        self._device = np.array([codes.setdefault(d, len(codes)) for d in devices], np.int32)
        self._by_device = config.related == "device"
        self._groups = [
            np.array(sorted({index[g] for g in grp}), np.int32) for grp in config.groups
        ]
        self._watched = np.zeros(n, bool)
        if self._by_device:
            self._watched[np.isin(self._device, self._device[self._trigger])] = True
        else:
            self._watched |= self._trigger
        for grp in self._groups:
            if self._trigger[grp].any():
                self._watched[grp] = True
        self._pre_ms = int(config.pre_s * 1000)
        self._post_ms = int(config.post_s * 1000)
        self._max_ms = int(config.max_s * 1000)
        self._levels = frozenset(config.levels)
        watched = np.flatnonzero(self._watched)
        self._all_watched = bool(self._watched.all())
        self.plan: RingPlan = ring_plan(
            pre_s=config.pre_s,
            ring_mb=config.ring_mb,
            max_points=config.max_ring_points,
            n_tags=n,
            watched_poll_s=None if poll_s is None else [float(poll_s[i]) for i in watched.tolist()],
            watched=int(watched.shape[0]),
        )
        """The ring's size; ``plan.warning`` when the budget holds less than ``pre_s``."""
        self._ring = PointRing(self.plan.capacity, n)
        self._active: dict[tuple[int, str], tuple[int, int]] = {}  # (tag, kind) → level, since
        self._open: list[_Incident] = []
        self._index = index
        self._last_ms: int | None = None  # the newest time fed

    def use_limits(self, limits: Mapping[str, Mapping[str, float]]) -> None:
        """A reload changed the rules in place: incidents opened from now on carry these."""
        self._limits = {k: dict(v) for k, v in limits.items()}

    @property
    def ring_points(self) -> int:
        """Samples held in the pre-trigger ring now."""
        return len(self._ring)

    @property
    def ring_dropped(self) -> int:
        """Samples dropped from the pre-trigger ring because it was full."""
        return self._ring.dropped

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
        # the ring copies what it keeps: a batch of watched tags only (at a site with a rule on
        # every tag, every batch) is passed as it is, without a mask and four copies per poll
        if self._all_watched:
            chunk = (
                tag.astype(np.int32, copy=False),
                ts_ms.astype(np.int64, copy=False),
                value.astype(np.float64, copy=False),
                quality.astype(np.uint8, copy=False),
            )
        else:
            keep = self._watched[tag]
            chunk = (
                tag[keep].astype(np.int32, copy=False),
                ts_ms[keep].astype(np.int64, copy=False),
                value[keep].astype(np.float64, copy=False),
                quality[keep].astype(np.uint8, copy=False),
            )
        self._ring.push(*chunk)
        for inc in self._open:
            sel = inc.member[chunk[0]]
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
        if now > -(2**62):
            self._last_ms = now if self._last_ms is None else max(self._last_ms, now)
        still: list[_Incident] = []
        for inc in self._open:
            if inc.quiet_since is not None and now - inc.quiet_since >= self._post_ms:
                out.append(self._close(inc, inc.quiet_since + self._post_ms, "all_clear"))
            elif now - inc.opened_ms >= self._max_ms:
                out.append(self._close(inc, inc.opened_ms + self._max_ms, "max_duration"))
            else:
                still.append(inc)
        self._open = still
        self._ring.prune(now - self._pre_ms)
        return out

    def close_all(self, now_ms: int, reason: str = "stopped") -> list[bytes]:
        """Close every open incident (at shutdown); the bodies to append."""
        out = [self._close(inc, now_ms, reason) for inc in self._open]
        self._open = []
        return out

    def state(self) -> bytes:
        """The open incidents as JSON (for :meth:`restore` after a restart)."""
        names = self._names
        return _encode(
            [
                {
                    "incident": inc.id,
                    "opened_ms": inc.opened_ms,
                    "trigger": names[inc.trigger],
                    "alarms": sorted([names[t], kind] for t, kind in inc.alarms),
                    "last_ms": self._last_ms,
                }
                for inc in self._open
            ]
        )

    def restore(
        self, state: bytes | None, active: Sequence[tuple[str, str, int, int]]
    ) -> list[bytes]:
        """At start, before any feed: ``state`` as :meth:`state` stored it (None: nothing was
        open), ``active`` the (tag, kind, level, since_ms) of every alarm active now. Resumes
        or closes (``interrupted``) each incident; the bodies to append. An unreadable state
        raises ``ValueError``."""
        index = self._index
        for tag, kind, level, since in active:
            if tag in index and level > 0:
                self._active[(index[tag], kind)] = (level, since)
        if not state:
            return []
        try:
            saved = msgspec.json.decode(state, type=list[_Saved])
        except msgspec.DecodeError as exc:
            raise ValueError(f"incident recorder state: {exc}") from exc
        out: list[bytes] = []
        for doc in saved:
            alarms = {(index[t], k) for t, k in doc.alarms if t in index}
            if doc.trigger in index and any(a in self._active for a in alarms):
                member = self._related(index[doc.trigger])
                tags = np.flatnonzero(member).astype(np.int32)
                inc = _Incident(
                    doc.incident, doc.opened_ms, index[doc.trigger], tags,
                    frozenset(tags.tolist()), member, alarms,
                )  # fmt: skip
                self._open.append(inc)
            else:
                at = doc.opened_ms if doc.last_ms is None else doc.last_ms
                out.append(_encode(_close_doc(doc.incident, at, "interrupted")))
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
        member = self._related(ev.tag)
        tags = np.flatnonzero(member).astype(np.int32)
        stamp = dt.datetime.fromtimestamp(ev.ts_ms / 1000, tz=dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        inc = _Incident(
            f"{stamp}-{self._names[ev.tag]}",
            ev.ts_ms,
            ev.tag,
            tags,
            frozenset(tags.tolist()),
            member,
        )
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
        if len(self._ring):
            out += self._samples(inc.id, *self._ring.select(member, ev.ts_ms - self._pre_ms))
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
        return _encode(_close_doc(inc.id, at_ms, reason))

    def _related(self, i: int) -> NDArray[np.bool_]:
        """member[tag]: the tags recorded with trigger ``i`` (itself, its device's, groups)."""
        member = (
            self._device == self._device[i] if self._by_device else np.zeros_like(self._trigger)
        )
        member[i] = True
        for grp in self._groups:
            if (grp == i).any():
                member[grp] = True
        return member


class _Saved(msgspec.Struct, frozen=True):
    incident: str
    opened_ms: int
    trigger: str
    alarms: list[tuple[str, str]]
    last_ms: int | None


def _close_doc(incident: str, at_ms: int, reason: str) -> dict[str, object]:
    return {"type": "close", "incident": incident, "closed_ms": at_ms, "reason": reason}


def _finite(x: float | str | None) -> float | str | None:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x
