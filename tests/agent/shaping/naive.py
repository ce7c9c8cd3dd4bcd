"""Slow, obvious twin of the statistics kernels (agent/shaping/stats_kernel.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["NaiveStats"]


@dataclass
class _Open:
    start: int
    count: int = 0
    bad: int = 0
    good: list[float] = field(default_factory=list)


class NaiveStats:
    """Rows as ``(tag, start, count, min, max, mean, last, bad)`` with None for no good."""

    def __init__(self, window_ms: list[int]) -> None:
        self.window = window_ms
        self.open: dict[int, _Open] = {}

    def _row(self, t: int) -> tuple[object, ...]:
        o = self.open.pop(t)
        g = o.good
        if not g:
            return (t, o.start, o.count, None, None, None, None, o.bad)
        return (t, o.start, o.count, min(g), max(g), sum(g) / len(g), g[-1], o.bad)

    def add(self, samples: list[tuple[int, int, float, int]]) -> list[tuple[object, ...]]:
        out = []
        for t, ts, v, q in samples:
            w = self.window[t]
            if w <= 0:
                continue
            start = ts - ts % w
            if t in self.open and self.open[t].start != start:
                out.append(self._row(t))
            o = self.open.setdefault(t, _Open(start))
            o.count += 1
            if q != 0 or not math.isfinite(v):
                o.bad += 1
            else:
                o.good.append(v)
        return out

    def due(self, now: int) -> list[tuple[object, ...]]:
        ended = [t for t, o in sorted(self.open.items()) if o.start + self.window[t] <= now]
        return [self._row(t) for t in ended]
