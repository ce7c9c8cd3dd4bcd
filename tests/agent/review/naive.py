"""The slow, obvious twin of agent/review/kpi.py: the definitions in its docstring, computed
event by event with dicts and lists (no numpy)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def _rank(values: list[int], p: int) -> int:
    s = sorted(values)
    return s[max(1, math.ceil(p / 100 * len(s))) - 1]


def naive_kpis(
    alarms: Sequence[Mapping[str, Any]],
    *,
    from_ms: int,
    to_ms: int,
    fleeting_ms: int,
    device_of: Mapping[str, str],
    events: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    rows = [a for a in alarms if a["ts_ms"] < to_ms]
    raises = [a for a in rows if a["event"] == "raise" and a["ts_ms"] >= from_ms]
    n = len(raises)
    span = to_ms - from_ms
    periods = math.ceil(span / 600_000)
    counts = [0] * periods
    for a in raises:
        counts[(a["ts_ms"] - from_ms) // 600_000] += 1
    peak = max(counts)

    by_alarm: dict[tuple[str, str], list[int]] = {}
    for a in raises:
        by_alarm.setdefault((a["tag"], a["alarm"]), []).append(a["ts_ms"])
    chattering = 0
    chatter_raises = 0
    for times in by_alarm.values():
        times.sort()
        marked = set()
        for j in range(len(times) - 2):
            if times[j + 2] - times[j] <= 60_000:
                marked.update((j, j + 1, j + 2))
        chattering += bool(marked)
        chatter_raises += len(marked)

    # an occurrence: a raise; an event joins the raise stored before it with its alarm_id,
    # else the last raise of its (tag, alarm) before it
    occ: list[dict[str, Any]] = []
    current: dict[tuple[str, str], dict[str, Any]] = {}
    by_id: dict[str, dict[str, Any]] = {}
    for a in rows:
        key = (a["tag"], a["alarm"])
        if a["event"] == "raise":
            current[key] = {
                "raise": None,
                "clear": None,
                "end": None,
                "ack": None,
                "max": 0,
                "tag": a["tag"],
                "alarm": a["alarm"],
            }
            occ.append(current[key])
            by_id.setdefault(a["alarm_id"], current[key])
            o: dict[str, Any] | None = current[key]
        else:
            o = by_id.get(a["alarm_id"], current.get(key))
        if o is None:
            continue  # before the first retained raise of this alarm
        o["max"] = max(o["max"], a["level"])
        for field, names in (
            ("raise", ("raise",)),
            ("clear", ("clear",)),
            ("end", ("clear", "return")),
            ("ack", ("ack",)),
        ):
            if a["event"] in names and o[field] is None:
                o[field] = a["ts_ms"]
    occs = occ
    inside = [o for o in occs if o["raise"] >= from_ms]
    stale = 0
    for o in occs:
        if o["clear"] is not None and o["clear"] < from_ms:
            continue
        until = to_ms if o["clear"] is None else min(o["clear"], to_ms)
        stale += until - o["raise"] > 86_400_000
    standing = sorted(
        (o["tag"], o["alarm"], o["max"], o["raise"]) for o in occs if o["clear"] is None
    )
    fleeting = sum(
        1 for o in inside if o["end"] is not None and o["end"] - o["raise"] < fleeting_ms
    )

    ranked = sorted(((-len(v), k[0], k[1]) for k, v in by_alarm.items()))[:10]
    actors = [(tag, alarm, -c, -c / n) for c, tag, alarm in ranked]
    priority: dict[int, int] = {}
    for o in inside:
        priority[o["max"]] = priority.get(o["max"], 0) + 1
    acks = [o["ack"] - o["raise"] for o in inside if o["ack"] is not None]
    clears = [o["clear"] - o["raise"] for o in inside if o["clear"] is not None]

    faults: dict[str, list[int]] = {}
    for a in raises:
        if a["alarm"] in ("fault", "stuck"):
            col = 0 if a["alarm"] == "fault" else 1
            faults.setdefault(device_of.get(a["tag"], "?"), [0, 0, 0])[col] += 1
    for e in events:
        if e["kind"] == "device_lost" and from_ms <= e["ts"] < to_ms:
            faults.setdefault(e["device"], [0, 0, 0])[2] += 1

    return {
        "alarms": n,
        "per_10min": n / (span / 600_000),
        "per_day": n / (span / 86_400_000),
        "periods": periods,
        "flood_periods": sum(c > 10 for c in counts),
        "peak": peak,
        "peak_ms": from_ms + counts.index(peak) * 600_000,
        "counts_10min": tuple(counts),
        "chattering": chattering,
        "chattering_raises": chatter_raises,
        "fleeting": fleeting,
        "stale": stale,
        "standing": len(standing),
        "standing_list": tuple(standing),
        "bad_actors": actors,
        "priority": priority,
        "ack_ms": {p: _rank(acks, p) for p in (50, 90, 95)} if acks else {},
        "acked": len(acks),
        "clear_ms": {p: _rank(clears, p) for p in (50, 90, 95)} if clears else {},
        "cleared": len(clears),
        "faults_by_device": {d: tuple(v) for d, v in sorted(faults.items())},
    }
