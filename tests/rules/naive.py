"""The slow, obvious twin of design/RULES.md, written from the text, sentence by sentence.

It keeps the whole history of valid samples per tag and rescans it at every sample: no rings,
no running sums, no cleverness. ``rules.engine.RuleEngine`` must produce the same events.
Parameters come as the merged key dict of one tag (what ``RuleEngine.params`` returns); the
defaults of RULES.md are applied here independently of the engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from rules.events import AlarmEvent

__all__ = ["NaiveEngine"]


@dataclass
class _Graded:
    level: int = 0
    unacked: bool = False
    timer: str | None = None  # "on" or "off"
    timer_start: int = 0


@dataclass
class _Tag:
    p: dict[str, Any]
    last_ts: int | None = None
    fault: bool = False
    graded: dict[str, _Graded] = field(
        default_factory=lambda: {"high": _Graded(), "low": _Graded()}
    )
    history: list[tuple[int, float]] = field(default_factory=list)  # every valid sample
    roc: bool = False
    trend: dict[str, bool] = field(
        default_factory=lambda: {"trend_high": False, "trend_low": False}
    )
    run: tuple[int, float] | None = None
    stuck: bool = False


class NaiveEngine:
    def __init__(self, params: list[dict[str, Any]]) -> None:
        """``params[k]`` is tag k's merged keys; an empty dict means the tag has no checks."""
        self.tags = [_Tag(dict(p)) if p else None for p in params]

    def sample(self, tag: int, ts: int, value: float, good: bool) -> list[AlarmEvent]:
        s = self.tags[tag]
        if s is None:
            return []
        p = s.p
        t = ts if s.last_ts is None else max(ts, s.last_ts)  # documented clamping
        s.last_ts = t
        out: list[AlarmEvent] = []
        shown = value if math.isfinite(value) else None

        def emit(alarm: str, event: str, level: int, **extra: Any) -> None:
            out.append(AlarmEvent(ts, tag, alarm, event, level, shown, extra))  # type: ignore[arg-type]

        # validity and fault
        reason = None
        if not good:
            reason = "quality"
        elif not math.isfinite(value):
            reason = "nan"
        elif "range" in p and not (p["range"][0] <= value <= p["range"][1]):
            reason = "range"
        if reason is not None:
            for g in s.graded.values():
                g.timer = None
            if not s.fault:
                s.fault = True
                emit("fault", "raise", 1, reason=reason)
            return out
        v = value
        if s.fault:
            s.fault = False
            emit("fault", "clear", 0)

        # high and low
        db = p.get("deadband", 0.0)
        for name, lim1_key, lim2_key in (("high", "high", "high_high"), ("low", "low", "low_low")):
            lim1, lim2 = p.get(lim1_key), p.get(lim2_key)
            if lim1 is None and lim2 is None:
                continue
            db1 = p.get(f"{lim1_key}_deadband", db)
            db2 = p.get(f"{lim2_key}_deadband", db)
            g = s.graded[name]
            c = g.level
            if name == "high":
                if lim2 is not None and (v >= lim2 or (c == 2 and v >= lim2 - db2)):
                    target = 2
                elif lim1 is not None and (v >= lim1 or (c >= 1 and v >= lim1 - db1)):
                    target = 1
                else:
                    target = 0
            elif lim2 is not None and (v <= lim2 or (c == 2 and v <= lim2 + db2)):
                target = 2
            elif lim1 is not None and (v <= lim1 or (c >= 1 and v <= lim1 + db1)):
                target = 1
            else:
                target = 0
            if target == c:
                g.timer = None
                continue
            kind = "on" if target > c else "off"
            if g.timer != kind:
                g.timer = kind
                g.timer_start = t
            delay_s = p.get("on_delay_s" if kind == "on" else "off_delay_s", 0.0)
            if not t - g.timer_start >= delay_s * 1000:
                continue
            g.timer = None
            g.level = target
            if c == 0:
                g.unacked = True
                emit(name, "raise", target, limit=float(lim1 if target == 1 else lim2))
            elif target > c:
                g.unacked = True
                emit(name, "escalate", target, limit=float(lim2))
            elif target > 0:
                emit(name, "deescalate", target)
            elif p.get("latch", False) and g.unacked:
                emit(name, "return", 0)
            else:
                g.unacked = False
                emit(name, "clear", 0)

        s.history.append((t, v))

        # roc
        if "roc_limit_per_min" in p:
            window_ms = p.get("roc_window_s", 60.0) * 1000
            ref = next(h for h in s.history if t - h[0] <= window_ms)
            if ref[0] != t:
                rate = (v - ref[1]) / ((t - ref[0]) / 60000)
                active = abs(rate) >= p["roc_limit_per_min"]
                if active != s.roc:
                    s.roc = active
                    if active:
                        emit("roc", "raise", 1, rate_per_min=rate)
                    else:
                        emit("roc", "clear", 0)

        # trend
        if "trend_window_s" in p and "trend_horizon_s" in p:
            pts = [h for h in s.history if t - h[0] < p["trend_window_s"] * 1000]
            if len(pts) >= p.get("trend_min_points", 5) and len({h[0] for h in pts}) > 1:
                # exact rational arithmetic: the fit as mathematics defines it, no rounding
                taus = [Fraction(h[0] - t, 1000) for h in pts]
                vals = [Fraction(h[1]) for h in pts]
                mt = sum(taus) / len(taus)
                mv = sum(vals) / len(vals)
                b = sum((x - mt) * (y - mv) for x, y in zip(taus, vals, strict=True)) / sum(
                    (x - mt) ** 2 for x in taus
                )
                a = mv - b * mt
                pred = a + b * Fraction(p["trend_horizon_s"])
                for name, k1, k2 in (
                    ("trend_high", "high", "high_high"),
                    ("trend_low", "low", "low_low"),
                ):
                    lim = p.get(k1, p.get(k2))
                    if lim is None:
                        continue
                    if name == "trend_high":
                        active = s.graded["high"].level == 0 and b > 0 and pred >= lim
                    else:
                        active = s.graded["low"].level == 0 and b < 0 and pred <= lim
                    if active != s.trend[name]:
                        s.trend[name] = active
                        if active:
                            emit(
                                name,
                                "raise",
                                1,
                                eta_s=float(max((Fraction(lim) - a) / b, Fraction(0))),
                            )
                        else:
                            emit(name, "clear", 0)

        # stuck
        if "stuck_s" in p:
            if s.run is None or abs(v - s.run[1]) > p.get("stuck_band", 0.0):
                s.run = (t, v)
                if s.stuck:
                    s.stuck = False
                    emit("stuck", "clear", 0)
            if not s.stuck and t - s.run[0] >= p["stuck_s"] * 1000:
                s.stuck = True
                emit("stuck", "raise", 1)
        return out

    def ack(self, tag: int, ts: int, alarm: str | None = None) -> list[AlarmEvent]:
        s = self.tags[tag]
        if s is None:
            return []
        out: list[AlarmEvent] = []
        for name in ("high", "low"):
            g = s.graded[name]
            if alarm not in (None, name) or not g.unacked:
                continue
            if g.level > 0:
                out.append(AlarmEvent(ts, tag, name, "ack", g.level, None))  # type: ignore[arg-type]
            elif s.p.get("latch", False):
                out.append(AlarmEvent(ts, tag, name, "clear", 0, None))  # type: ignore[arg-type]
            g.unacked = False
        return out
