"""The live-values table, rendered at 1 Hz for every tag of the site: built for cost.

A 1,000-tag site re-renders this table every second while someone watches it, so the parts
that do not change are made once: per tag the name, unit and limits cells (per language), the
sparklines once per ring step (every ``sparkline_s / 60`` s, vectorised over all tags, integer
coordinates from a lookup table), the time text once per distinct second. What is left per
tag per second is the value, quality and time cells. A value whose quality is not good is
shown as its quality name, never as a number.

Between two sparkline steps the page needs only those cells: :meth:`cells` gives them as one
compact JSON array (``[[class, value, quality, time], ...]`` in tag order) that console.js
writes into the table in place, so a browser gets ~40 bytes per tag per second instead of the
whole table (the sparklines are most of its size).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from html import escape

import msgspec
import numpy as np

from agent.console.i18n import TEXT, SiteClock
from agent.console.readmodel import LiveValues
from agent.tags import TagTable
from drivers import Quality

__all__ = ["LiveTable"]

_H = 22  # sparkline y range 0..22 (2 px margin in a 24 px box)
_LIMIT_NAMES = (("low_low", "LL"), ("low", "L"), ("high", "H"), ("high_high", "HH"))
_QUALITY = {int(q): escape(q.wire_name) for q in Quality}


def _num(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else "—"


class LiveTable:
    def __init__(
        self,
        *,
        live: LiveValues,
        tags: TagTable,
        limits: Callable[[int], Mapping[str, object]],
        clock: SiteClock,
    ) -> None:
        self._live = live
        self._tags = tags
        self._limits = limits
        self._clock = clock
        points = live.ring.shape[1]
        step = 120 / max(points - 1, 1)
        self._xy = [[f"{i * step:.0f},{y}" for y in range(_H + 1)] for i in range(points)]
        self._static: dict[str, list[tuple[str, str, str]]] = {}
        self._spark_step = -1
        self._sparks: list[str] = []
        self._times: dict[int, str] = {}

    def _static_parts(self, lang: str) -> list[tuple[str, str, str]]:
        """Per tag: (the row's head up to the value cell, the unit cell, the limits cell)."""
        got = self._static.get(lang)
        if got is not None:
            return got
        out = []
        for info in self._tags:
            lim = self._limits(info.index)
            parts = [
                f"{name} {_num(float(v))}"
                for key, name in _LIMIT_NAMES
                if isinstance(v := lim.get(key), float | int)
            ]
            out.append(
                (
                    f'data-tag="{escape(info.name)}"><td>{escape(info.name)}</td>',
                    f"<td>{escape(info.unit)}</td>",
                    f"<td>{' '.join(parts)}</td>",
                )
            )
        self._static[lang] = out
        return out

    def _sparklines(self) -> list[str]:
        if self._spark_step == self._live.steps:
            return self._sparks
        ring = self._live.ordered_ring()
        finite = np.isfinite(ring)
        lo = np.where(finite, ring, np.inf).min(axis=1, keepdims=True)
        hi = np.where(finite, ring, -np.inf).max(axis=1, keepdims=True)
        span = np.where(hi > lo, hi - lo, 1.0)
        with np.errstate(invalid="ignore"):
            y = np.where(finite, np.rint(_H - 2 - (ring - lo) / span * (_H - 4)), -1)
        xy = self._xy
        out = []
        for row in y.astype(np.int64).tolist():
            segs, cur = [], []
            for i, v in enumerate(row):
                if v >= 0:
                    cur.append(xy[i][v])
                elif cur:
                    segs.append(cur)
                    cur = []
            if cur:
                segs.append(cur)
            lines = "".join(f'<polyline points="{" ".join(s)}"/>' for s in segs if len(s) > 1)
            out.append(
                f'<svg class="spark" width="120" height="24" viewBox="0 0 120 24">{lines}</svg>'
            )
        self._sparks, self._spark_step = out, self._live.steps
        return out

    def _time(self, ts_ms: int) -> str:
        sec = ts_ms // 1000
        got = self._times.get(sec)
        if got is None:
            if len(self._times) > 4096:
                self._times.clear()
            got = self._times[sec] = self._clock.short(ts_ms)
        return got

    def structure(self) -> tuple[object, ...]:
        """Changes when the whole table must be sent again (a ring step, a device state)."""
        return (self._live.steps, *sorted(self._live.online.items()))

    def _cell(self, i: int, values: list[float], quality: list[int], stamps: list[int],
              good: str, bad: str) -> tuple[str, str, str, str]:  # fmt: skip
        ts, q = stamps[i], quality[i]
        if ts == 0:
            return "none", "—", "—", "—"
        if q == 0:
            return "good", _num(values[i]), good, self._time(ts)
        return "bad", bad, _QUALITY.get(q, "bad"), self._time(ts)

    def cells(self, lang: str) -> str:
        t = TEXT[lang]
        live = self._live
        values, quality, stamps = live.value.tolist(), live.quality.tolist(), live.ts_ms.tolist()
        rows = [
            self._cell(info.index, values, quality, stamps, t["good"], t["bad"])
            for info in self._tags
        ]
        return msgspec.json.encode(rows).decode()

    def render(self, lang: str) -> str:
        t = TEXT[lang]
        live = self._live
        static = self._static_parts(lang)
        sparks = self._sparklines()
        values = live.value.tolist()
        quality = live.quality.tolist()
        stamps = live.ts_ms.tolist()
        good, bad = t["good"], t["bad"]
        head = "".join(
            f"<th>{t[k]}</th>"
            for k in ("tag", "value", "unit", "quality", "limits", "time", "trend")
        )
        out = [f'<div id="live" data-version="{live.version}">']
        device = None
        for info in self._tags:
            if info.device != device:
                if device is not None:
                    out.append("</tbody></table>")
                device = info.device
                online = live.online.get(device)
                state = t["online"] if online else t["offline"]
                out.append(
                    f'<h3>{escape(device)} <small class="{"ok" if online else "bad"}">{state}'
                    f'</small></h3><table class="live"><thead><tr>{head}</tr></thead><tbody>'
                )
            i = info.index
            row_head, unit, limits = static[i]
            cls, shown, qual, when = self._cell(i, values, quality, stamps, good, bad)
            out.append(
                f'<tr class="{cls}" {row_head}<td class="v">{shown}</td>{unit}'
                f'<td class="q">{qual}</td>{limits}<td>{when}</td><td>{sparks[i]}</td></tr>'
            )
        if device is not None:
            out.append("</tbody></table>")
        out.append("</div>")
        return "".join(out)
