"""Incidents from the recorder's records (agent/review/recorder.py) and their reports.

An incident's window is ``[opened - pre_s, closed]``. Its events are the alarm stream's events
of its tags in that window and the other events of their occurrences (who acknowledged; the
trend warning raised before the window began), merged with the events the recorder wrote.

Figures (docs/review.md):
- time above a limit: the sum of the intervals ``[t_i, t_i+1)`` between a tag's consecutive
  samples where ``v_i`` is at or above ``high``/``high_high`` (at or below ``low``/``low_low``);
- time to acknowledge / to clear: an occurrence's ``raise`` to its first ``ack`` / ``clear``
  (for an alarm already active at opening, from its raise as the recorder saw it);
- trend lead time: a ``trend_high``/``trend_low`` raise to the next ``raise`` or ``escalate``
  of ``high``/``low`` on the same tag;
- data quality: samples by quality, and the largest gap between consecutive samples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agent.review.history import EVENTS, KINDS, QUALITY_NAMES, AlarmLog, Point, PointLog, point_log

__all__ = ["Incident", "incident_report", "incidents_from"]

_ABOVE = ("high", "high_high")
_BELOW = ("low", "low_low")


@dataclass(slots=True)
class Incident:
    id: str
    opened_ms: int
    trigger: dict[str, Any]
    tags: list[str]
    units: dict[str, str]
    limits: dict[str, dict[str, float]]
    active: list[list[Any]]
    pre_s: float
    closed_ms: int | None = None
    reason: str | None = None
    points: list[Point] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def start_ms(self) -> int:
        return self.opened_ms - int(self.pre_s * 1000)


def incidents_from(records: Sequence[Mapping[str, Any]]) -> list[Incident]:
    """Incidents in order of opening; records of an unknown incident are ignored."""
    by_id: dict[str, Incident] = {}
    for doc in records:
        kind, iid = doc.get("type"), str(doc.get("incident"))
        if kind == "open":
            by_id[iid] = Incident(
                id=iid,
                opened_ms=int(doc["opened_ms"]),
                trigger=dict(doc["trigger"]),
                tags=list(doc["tags"]),
                units=dict(doc.get("units", {})),
                limits={k: dict(v) for k, v in doc.get("limits", {}).items()},
                active=list(doc.get("active", [])),
                pre_s=float(doc.get("pre_s", 0.0)),
            )
            continue
        inc = by_id.get(iid)
        if inc is None:
            continue
        if kind == "samples":
            inc.points += [
                Point(p[0], p[1], p[2], p[3] if len(p) > 3 else None) for p in doc["points"]
            ]
        elif kind == "alarms":
            inc.events += list(doc["events"])
        elif kind == "close":
            inc.closed_ms, inc.reason = int(doc["closed_ms"]), str(doc["reason"])
    return sorted(by_id.values(), key=lambda i: (i.opened_ms, i.id))


def _stream_events(inc: Incident, log: AlarmLog, end_ms: int) -> list[dict[str, Any]]:
    """The alarm stream's events of the incident's tags: those in the window, and every event
    of an occurrence that has one there (a trend warning raised before the window starts)."""
    names = set(inc.tags)
    codes = np.array([i for i, n in enumerate(log.tags) if n in names], np.int32)
    mine = np.isin(log.tag, codes) & (log.ts_ms <= end_ms)
    inside = mine & (log.ts_ms >= inc.start_ms)
    sel = np.flatnonzero(mine & np.isin(log.occ, np.unique(log.occ[inside])))
    out = []
    for i in sel.tolist():
        tag = log.tags[int(log.tag[i])]
        doc: dict[str, Any] = {
            "ts_ms": int(log.ts_ms[i]),
            "tag": tag,
            "alarm": KINDS[int(log.kind[i])],
            "event": EVENTS[int(log.event[i])],
            "level": int(log.level[i]),
            "value": None if np.isnan(log.value[i]) else float(log.value[i]),
        }
        if i in log.users:
            doc["user"] = log.users[i]
        if not np.isnan(log.eta_s[i]):
            doc["eta_s"] = float(log.eta_s[i])
        out.append(doc)
    return out


def _time_beyond(ts: np.ndarray, v: np.ndarray, limit: float, above: bool) -> int:
    if ts.shape[0] < 2:
        return 0
    hit = (v[:-1] >= limit) if above else (v[:-1] <= limit)
    return int((np.diff(ts)[hit]).sum())


def incident_report(
    inc: Incident, *, alarms: AlarmLog | None, device_events: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """The report's data as plain JSON-ready values (times in epoch ms, durations in ms)."""
    end = (
        inc.closed_ms
        if inc.closed_ms is not None
        else max((p.ts for p in inc.points), default=inc.opened_ms)
    )
    merged = {(e["ts_ms"], e["tag"], e["alarm"], e["event"]): e for e in inc.events}
    if alarms is not None:
        for e in _stream_events(inc, alarms, end):
            merged[(e["ts_ms"], e["tag"], e["alarm"], e["event"])] = e
    events = sorted(merged.values(), key=lambda e: e["ts_ms"])
    pts: PointLog = point_log(inc.points, dedup=True)

    raised: dict[tuple[str, str], int] = {(a[0], a[1]): int(a[3]) for a in inc.active}
    occurrences = []
    for e in events:
        key = (e["tag"], e["alarm"])
        if e["event"] == "raise":
            raised[key] = e["ts_ms"]
        occ_start = raised.get(key)
        if e["event"] in ("ack", "clear") and occ_start is not None:
            occurrences.append(
                {
                    "tag": key[0],
                    "alarm": key[1],
                    "event": e["event"],
                    "after_ms": e["ts_ms"] - occ_start,
                    "who": e.get("user"),
                }
            )
        if e["event"] == "clear":
            raised.pop(key, None)
    to_ack = [o for o in occurrences if o["event"] == "ack"]
    to_clear = [o for o in occurrences if o["event"] == "clear"]

    leads = []
    for i, e in enumerate(events):
        if e["alarm"] in ("trend_high", "trend_low") and e["event"] == "raise":
            want = "high" if e["alarm"] == "trend_high" else "low"
            nxt = next(
                (
                    f
                    for f in events[i + 1 :]
                    if f["tag"] == e["tag"]
                    and f["alarm"] == want
                    and f["event"] in ("raise", "escalate")
                ),
                None,
            )
            leads.append(
                {
                    "tag": e["tag"],
                    "ts_ms": e["ts_ms"],
                    "eta_s": e.get("eta_s"),
                    "limit_ms": None if nxt is None else nxt["ts_ms"],
                    "lead_ms": None if nxt is None else nxt["ts_ms"] - e["ts_ms"],
                }
            )

    tags = []
    for name in inc.tags:
        ts, v, q = pts.of(name)
        good = v[q == 0]
        peak_i = int(np.nanargmax(np.where(q == 0, v, -np.inf))) if good.shape[0] else None
        limits = inc.limits.get(name, {})
        beyond = {
            k: _time_beyond(ts, np.where(q == 0, v, np.nan), float(limits[k]), k in _ABOVE)
            for k in (*_ABOVE, *_BELOW)
            if k in limits
        }
        qual = {QUALITY_NAMES[c]: int((q == c).sum()) for c in np.unique(q).tolist()}
        tags.append(
            {
                "tag": name,
                "unit": inc.units.get(name, ""),
                "samples": int(ts.shape[0]),
                "pre_trigger_samples": int((ts < inc.opened_ms).sum()),
                "peak": None if peak_i is None else float(v[peak_i]),
                "peak_ms": None if peak_i is None else int(ts[peak_i]),
                "beyond_ms": beyond,
                "quality": qual,
                "max_gap_ms": int(np.diff(ts).max()) if ts.shape[0] > 1 else None,
                "limits": limits,
            }
        )
    devices = [
        dict(e)
        for e in device_events
        if str(e.get("kind", "")).startswith("device_") and inc.start_ms <= e["ts"] <= end
    ]
    return {
        "incident": inc.id,
        "opened_ms": inc.opened_ms,
        "closed_ms": inc.closed_ms,
        "reason": inc.reason,
        "start_ms": inc.start_ms,
        "end_ms": end,
        "trigger": inc.trigger,
        "timeline": events,
        "to_ack": to_ack,
        "to_clear": to_clear,
        "trend_leads": leads,
        "tags": tags,
        "device_events": devices,
    }
