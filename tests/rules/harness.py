"""Feeding traces to the engine and its naive twin, and comparing their events."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rules import AlarmEvent, RuleEngine
from rules.config import RuleConfig
from tests.rules.naive import NaiveEngine

__all__ = [
    "Ack",
    "Batch",
    "Sample",
    "events_match",
    "feed",
    "one_tag",
    "run_engine",
    "run_naive",
    "short",
]


@dataclass(frozen=True)
class Sample:
    tag: int
    ts: int
    value: float
    good: bool = True


@dataclass(frozen=True)
class Ack:
    tag: int
    ts: int
    alarm: Any = None


@dataclass(frozen=True)
class Batch:
    """Marks a batch boundary for the engine (the twin is sample-at-a-time anyway)."""


Op = Sample | Ack | Batch


def run_engine(engine: RuleEngine, ops: Sequence[Op]) -> list[AlarmEvent]:
    out: list[AlarmEvent] = []
    pending: list[Sample] = []

    def flush() -> None:
        if pending:
            out.extend(
                engine.evaluate(
                    np.array([s.tag for s in pending], dtype=np.int32),
                    np.array([s.ts for s in pending], dtype=np.int64),
                    np.array([s.value for s in pending], dtype=np.float64),
                    np.array([0 if s.good else 2 for s in pending], dtype=np.uint8),
                )
            )
            pending.clear()

    for op in ops:
        if isinstance(op, Sample):
            pending.append(op)
            continue
        flush()
        if isinstance(op, Ack):
            out.extend(engine.acknowledge(op.tag, op.ts, op.alarm))
    flush()
    return out


def run_naive(twin: NaiveEngine, ops: Sequence[Op]) -> list[AlarmEvent]:
    out: list[AlarmEvent] = []
    for op in ops:
        if isinstance(op, Sample):
            out.extend(twin.sample(op.tag, op.ts, op.value, op.good))
        elif isinstance(op, Ack):
            out.extend(twin.ack(op.tag, op.ts, op.alarm))
    return out


def one_tag(**params: Any) -> RuleEngine:
    return RuleEngine(["T"], [RuleConfig(tags=("T",), **params)])


def feed(engine: RuleEngine, *rows: tuple[float, ...] | Ack) -> list[AlarmEvent]:
    """Rows ``(ts_s, value)`` or ``(ts_s, value, good)`` for tag 0; ts in seconds."""
    ops: list[Op] = []
    for row in rows:
        if isinstance(row, Ack):
            ops.append(row)
        else:
            good = bool(row[2]) if len(row) > 2 else True
            ops.append(Sample(0, round(row[0] * 1000), row[1], good))
    return run_engine(engine, ops)


def short(events: Sequence[AlarmEvent]) -> list[tuple[Any, ...]]:
    """(ts_s, alarm, event, level) tuples: what most clause tests assert on."""
    return [(e.ts_ms / 1000, e.alarm, e.event, e.level) for e in events]


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return bool(a == b)


def events_match(got: Sequence[AlarmEvent], want: Sequence[AlarmEvent]) -> bool:
    """Equal events; extra floats (eta_s is computed differently) within 1e-9."""
    if len(got) != len(want):
        return False
    for g, w in zip(got, want, strict=True):
        if (g.ts_ms, g.tag, g.alarm, g.event, g.level, g.value) != (
            w.ts_ms,
            w.tag,
            w.alarm,
            w.event,
            w.level,
            w.value,
        ):
            return False
        if g.extra.keys() != w.extra.keys():
            return False
        if not all(_close(g.extra[k], w.extra[k]) for k in g.extra):
            return False
    return True
