"""Histories for the review tests and benchmark, written with the agent's own codec into a real
Store (the simulator's scenarios belong to another module; these are the sensors it lacks).

- :func:`random_alarm_history`: many tags, occurrences of every kind (fleeting, stale,
  standing, acknowledged by someone, chattering bad actors, sensor faults, device_lost events),
  consistent per (tag, kind): a raise after the previous occurrence cleared.
- :func:`engine_history`: signals run through the real rule engine (RuleEngine + AlarmIds +
  codec), written as the pipeline writes them: each poll's alarm records, then its telemetry
  record (and the incident recorder's records). tests/agent/review/test_commands.py uses it
  for a chattering gas detector around its limit, a stuck sensor and a leak ramp.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from agent.alarm_ids import AlarmIds
from agent.codec import alarm_body, event_body, telemetry_body
from agent.review.recorder import IncidentRecorder
from buffer import Store, Stream
from rules import RuleEngine
from rules.config import RuleConfig

__all__ = ["Ack", "engine_history", "random_alarm_history"]

GW = "GW1"
DAY = 86_400_000
T0 = 1_780_000_000_000  # 2026-05-28, a fixed start


def _append_sorted(
    store: Store, stream: Stream, items: list[tuple[int, bytes]], chunk: int = 20_000
) -> None:
    items.sort(key=lambda x: x[0])
    for i in range(0, len(items), chunk):
        part = items[i : i + chunk]
        # one transaction per chunk, created at its last event (records are created after)
        store.append(stream, [p for _, p in part], created_ms=part[-1][0])


def random_alarm_history(
    store: Store, *, tags: int, days: float, seed: int, per_tag_day: float = 3.0, t0: int = T0
) -> dict[str, str]:
    """Fill ``store``; returns tag → device (10 tags per device)."""
    rng = random.Random(seed)
    names = [f"T{i:04d}" for i in range(tags)]
    device = {n: f"dev-{i // 10:03d}" for i, n in enumerate(names)}
    end = t0 + int(days * DAY)
    out: list[tuple[int, bytes]] = []
    bad = set(rng.sample(names, max(1, tags // 50)))  # chattering bad actors

    def emit(
        ts: int, tag: str, kind: str, event: str, level: int, aid: str, **extra: float | str
    ) -> None:
        value = None if event == "ack" else round(rng.uniform(0, 100), 2)
        out.append(
            (
                ts,
                alarm_body(
                    tag=tag,
                    alarm=kind,
                    event=event,
                    level=level,
                    value=value,
                    ts_ms=ts,
                    alarm_id=aid,
                    extra=extra,
                ),
            )
        )

    for tag in names:
        for kind in ("high", "low", "fault", "stuck", "trend_high"):
            rate = (
                per_tag_day
                * {"high": 0.5, "low": 0.2, "fault": 0.1, "stuck": 0.05, "trend_high": 0.15}[kind]
            )
            if tag in bad and kind == "high":
                rate *= 4
            t = t0 + int(rng.expovariate(rate / DAY))
            while t < end:
                aid = f"{GW}:{tag}:{kind}:{t}"
                graded = kind in ("high", "low")
                emit(t, tag, kind, "raise", 1, aid, **({"limit": 25.0} if graded else {}))
                r = rng.random()
                if tag in bad and kind == "high":
                    dur = rng.randint(2_000, 15_000)
                elif r < 0.1:
                    dur = rng.randint(200, 9_000)  # fleeting
                elif r < 0.13:
                    dur = rng.randint(DAY, 2 * DAY)  # stale
                else:
                    dur = int(rng.expovariate(1 / 600_000)) + 1
                cur = t
                if graded and rng.random() < 0.25:
                    cur += rng.randint(1, max(1, dur // 3))
                    emit(cur, tag, kind, "escalate", 2, aid, limit=50.0)
                    cur += rng.randint(1, max(1, dur // 3))
                    emit(cur, tag, kind, "deescalate", 1, aid)
                if graded and rng.random() < 0.6:
                    emit(
                        cur + rng.randint(1, max(1, dur // 3)),
                        tag,
                        kind,
                        "ack",
                        1,
                        aid,
                        user=rng.choice(["op-li", "op-wang", "操作员张"]),
                    )
                clear_at = t + dur
                if rng.random() < 0.02 or clear_at >= end:
                    break  # standing: never cleared
                emit(clear_at, tag, kind, "clear", 0, aid)
                if tag in bad and kind == "high" and rng.random() < 0.8:
                    t = clear_at + rng.randint(1_000, 20_000)  # a chattering burst
                else:
                    t = clear_at + int(rng.expovariate(rate / DAY)) + 1
    _append_sorted(store, Stream.ALARM, out)
    events = []
    for dev in sorted(set(device.values())):
        for _ in range(rng.randint(0, 3)):
            ts = rng.randint(t0, end - 1)
            events.append((ts, event_body("device_lost", ts, {"device": dev, "at_ms": ts})))
    _append_sorted(store, Stream.EVENT, events, chunk=1)
    return device


@dataclass(frozen=True)
class Ack:
    ts_ms: int
    tag: str
    user: str


def engine_history(
    store: Store,
    *,
    names: Sequence[str],
    rules: Sequence[RuleConfig],
    values: Mapping[str, Callable[[np.ndarray], np.ndarray]],
    seconds: int,
    acks: Sequence[Ack] = (),
    recorder: IncidentRecorder | None = None,
    t0: int = T0,
) -> None:
    """Run the signals (seconds since start → value; NaN: a bad reading; a tag without a
    signal reads 1.0) through the rule engine once a second and append what the pipeline
    appends per poll: its alarm records, then one telemetry record; with ``recorder``, also
    the incident records it returns (as the runtime does)."""
    engine = RuleEngine(list(names), list(rules))
    ids = AlarmIds(GW)
    secs = np.arange(seconds, dtype=np.float64)
    cols = [values[n](secs) if n in values else np.ones(seconds) for n in names]
    pending = sorted(acks, key=lambda a: a.ts_ms)
    tag = np.arange(len(names), dtype=np.int32)
    for i in range(seconds):
        ts = t0 + i * 1000
        vals = np.array([c[i] for c in cols])
        qual = np.where(np.isnan(vals), 1, 0).astype(np.uint8)
        tss = np.full(len(names), ts, np.int64)
        events = engine.evaluate(tag, tss, vals, qual)
        while pending and pending[0].ts_ms <= ts:
            a = pending.pop(0)
            acked = engine.acknowledge(list(names).index(a.tag), a.ts_ms)
            for e in acked:
                e.extra["user"] = a.user
            events += acked
        if events:
            store.append(
                Stream.ALARM,
                [
                    alarm_body(
                        tag=names[e.tag],
                        alarm=e.alarm,
                        event=e.event,
                        level=e.level,
                        value=e.value,
                        ts_ms=e.ts_ms,
                        alarm_id=ids.for_event(names[e.tag], e.alarm, e.event, e.ts_ms),
                        extra=e.extra,
                    )
                    for e in events
                ],
                created_ms=ts,
            )
        points = [
            (nm, ts, None if math.isnan(v) else float(v), "bad_comm" if math.isnan(v) else None)
            for nm, v in zip(names, vals.tolist(), strict=True)
        ]
        store.append(Stream.TELEMETRY, [telemetry_body(points)], created_ms=ts)
        if recorder is not None:
            bodies = recorder.feed(tag, tss, vals, qual, events)
            if bodies:
                store.append(Stream.INCIDENT, bodies, created_ms=ts)
    if recorder is not None:
        bodies = recorder.close_all(t0 + seconds * 1000)
        if bodies:
            store.append(Stream.INCIDENT, bodies, created_ms=t0 + seconds * 1000)
