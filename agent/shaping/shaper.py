"""One poll's samples → the telemetry records that leave the site, by per-tag policy.

Order per poll (event loop thread; alarms were already evaluated on every raw sample):

1. policy split: ``stats`` samples feed the statistics windows (every sample, unrounded),
   ``raw`` samples go on, ``local_only`` samples stop here (they stay in the rule engine);
2. ``precision``: raw values of tags with a precision are rounded to that many decimals
   (``round(v·10^d) / 10^d``, the nearest double to the decimal: no ``2.3000000000000003``
   on the wire), before report-by-exception so float noise is no change; statistics rows are
   rounded the same way;
3. report-by-exception (raw tags only), then encoding into body v1 (``points``) or v2
   (groups) records; closed statistics windows become statistics records (always body v2:
   they have no v1 form).

Columns all the way (numpy masks and gathers); the only Python loops are per record and per
closed statistics row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from agent.codec import TelemetryEncoder
from agent.codec_v2 import StatRow, stats_body
from agent.config.governance import TagPolicy
from agent.shaping.stats import StatsWindows
from agent.shaping.stats import warm_up as warm_stats
from agent.telemetry import ExceptionFilter, TelemetryBatcher
from agent.telemetry_v2 import GroupBatcher, GroupEncoder

__all__ = ["TelemetryShaper"]

_STATS_TICK_S = 1.0  # how often open statistics windows are checked when no poll comes


class TelemetryShaper:
    """Shapes telemetry for one tag table (see the module docstring). Keyword-only:
    ``names`` tag names by index; ``policies`` one per name; ``qualities`` code → wire name;
    ``body`` 1 or 2; ``max_points``/``max_bytes``/``linger_ms`` the record limits; ``rbe`` the
    report-by-exception filter of raw tags (None: every raw sample is sent)."""

    def __init__(
        self,
        *,
        names: Sequence[str],
        policies: Sequence[TagPolicy],
        qualities: Mapping[int, str],
        body: Literal[1, 2],
        max_points: int,
        max_bytes: int,
        linger_ms: int,
        rbe: ExceptionFilter | None,
    ) -> None:
        if len(names) != len(policies):
            raise ValueError("one policy per tag is required")
        self.names = tuple(names)
        self._index = {n: i for i, n in enumerate(names)}
        self.policies = tuple(policies)
        self.body = body
        prec = np.array([np.nan if p.precision is None else p.precision for p in policies])
        self._has_prec = ~np.isnan(prec)
        self._scale = np.where(self._has_prec, 10.0 ** np.nan_to_num(prec), 1.0)
        self._any_prec = bool(self._has_prec.any())
        self._raw = np.array([p.policy == "raw" for p in policies], dtype=bool)
        self._all_raw = bool(self._raw.all())
        windows = np.array(
            [p.window_ms if p.policy == "stats" else 0 for p in policies], dtype=np.int64
        )
        self._stats = StatsWindows(names, windows) if windows.any() else None
        self._rbe = rbe
        self._v1: tuple[TelemetryEncoder, TelemetryBatcher] | None = None
        self._v2: tuple[GroupEncoder, GroupBatcher] | None = None
        if body == 1:
            b1 = TelemetryBatcher(max_points=max_points, max_bytes=max_bytes, linger_ms=linger_ms)
            self._v1 = (TelemetryEncoder(names, qualities), b1)
        else:
            b2 = GroupBatcher(max_points=max_points, max_bytes=max_bytes, linger_ms=linger_ms)
            self._v2 = (GroupEncoder(names, qualities), b2)
        self.linger_ms = linger_ms

    def warm_up(self) -> None:
        """Compile (or load) the statistics kernels when this shaper has statistics windows
        (see :func:`agent.shaping.stats.warm_up`); a worker thread may call it."""
        if self._stats is not None:
            warm_stats()

    @property
    def rbe(self) -> ExceptionFilter | None:
        """The report-by-exception filter of raw tags (None: every raw sample is sent)."""
        return self._rbe

    @property
    def timer_s(self) -> float | None:
        """How often :meth:`due` should be called when polls are quiet (None: never needed)."""
        lingers = max(self.linger_ms / 4000, 0.005) if self.linger_ms else None
        if self._stats is None:
            return lingers
        return min(lingers or _STATS_TICK_S, _STATS_TICK_S)

    def round(self, tag: NDArray[np.int32], value: NDArray[np.float64]) -> NDArray[np.float64]:
        """``value`` with each tag's precision applied (a copy when any tag has one)."""
        if not self._any_prec:
            return value
        s = self._scale[tag]
        with np.errstate(invalid="ignore", over="ignore"):
            rounded = np.round(value * s) / s
        # A value too large to scale stays as it was (inf after scaling is not a rounding).
        return np.where(self._has_prec[tag] & np.isfinite(rounded), rounded, value)

    def add(
        self,
        tag: NDArray[np.int32],
        ts: NDArray[np.int64],
        value: NDArray[np.float64],
        quality: NDArray[np.uint8],
        now_ms: int,
        exact: Mapping[int, int] | None = None,
    ) -> list[bytes]:
        """One poll's samples; returns the records that are complete (possibly none).

        ``exact`` maps a sample's position to the exact integer of a 64-bit register
        (``SampleBatch.exact``); both bodies write that integer instead of the float value,
        and precision never applies to it.
        """
        out: list[bytes] = []
        if self._stats is not None and len(tag):
            out += self._stat_bodies(self._stats.add(tag, ts, value, quality))
            out += self._stat_bodies(self._stats.due(now_ms))
        if not self._all_raw and len(tag):
            keep = self._raw[tag]
            tag, ts, value, quality = tag[keep], ts[keep], value[keep], quality[keep]
            exact = _kept(exact, keep)
        value = self.round(tag, value)  # before the deadband: float noise is no change
        if self._rbe is not None and len(tag):
            keep = self._rbe.select(tag, ts, value, quality)
            if not keep.all():
                tag, ts, value, quality = tag[keep], ts[keep], value[keep], quality[keep]
                exact = _kept(exact, keep)
        if self._v1 is not None:
            enc1, b1 = self._v1
            out += b1.add_rows(enc1.rows(tag, ts, value, quality, exact=exact), now_ms)
        elif self._v2 is not None:
            enc2, b2 = self._v2
            out += b2.add(enc2.pieces(tag, ts, value, quality, exact), now_ms)
        return out

    def due(self, now_ms: int) -> list[bytes]:
        """Records that lingered long enough, and statistics windows that ended."""
        out = self._stat_bodies(self._stats.due(now_ms)) if self._stats is not None else []
        if self._v1 is not None:
            out += self._v1[1].due(now_ms)
        elif self._v2 is not None:
            out += self._v2[1].due(now_ms)
        return out

    def flush(self) -> list[bytes]:
        """Everything held, including open statistics windows (shutdown)."""
        out = self._stat_bodies(self._stats.flush()) if self._stats is not None else []
        if self._v1 is not None:
            out += self._v1[1].flush()
        elif self._v2 is not None:
            out += self._v2[1].flush()
        return out

    def _stat_bodies(self, by_window: dict[int, list[StatRow]]) -> list[bytes]:
        bodies = []
        for window_ms, rows in by_window.items():
            if self._any_prec:
                rows = [self._round_row(r) for r in rows]
            bodies.append(stats_body(window_ms, rows))
        return bodies

    def _round_row(self, r: StatRow) -> StatRow:
        p = self.policies[self._index[r.tag]].precision
        if p is None:
            return r

        def rd(x: float | None) -> float | None:
            return None if x is None else round(x, p)

        return r._replace(min=rd(r.min), max=rd(r.max), mean=rd(r.mean), last=rd(r.last))


def _kept(exact: Mapping[int, int] | None, keep: NDArray[np.bool_]) -> Mapping[int, int] | None:
    """``exact`` with positions renumbered after dropping the samples ``keep`` excludes."""
    if not exact:
        return exact
    moved = np.cumsum(keep) - 1
    return {int(moved[k]): v for k, v in exact.items() if keep[k]}
