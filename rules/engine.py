"""The rule engine: merged parameters → kernel arrays → :class:`AlarmEvent` lists.

Contract: design/RULES.md (exactly), with the resolutions written down in docs/rules.md.

- ``evaluate`` takes one batch of samples (any mix of tags, in arrival order) and returns the
  events in processing order: per sample in input order, per sample in the kind order fault,
  high, low, roc, trend_high, trend_low, stuck. State carries over between calls, so splitting
  a stream into batches never changes the events.
- A sample older than its tag's previous sample is processed at the previous timestamp (a wall
  clock step must not stop alarming); such samples are counted in ``clamped_samples``.
- ``acknowledge`` only touches the acknowledgement state of ``high``/``low``; timers, windows
  and other checks are untouched.
- Window checks (roc, trend) keep per-tag ring buffers in two flat arrays; a ring grows (never
  shrinks) before a batch when it could overflow, so sizing needs no guess about sample rates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final, get_args

import numpy as np
from numpy.typing import NDArray

from rules import kernels as kn
from rules.config import RuleConfig
from rules.events import AlarmEvent, AlarmKind, Transition
from rules.params import ParamValue, number, resolve_rules

__all__ = ["RuleEngine"]

_EVENTS: Final[tuple[Transition, ...]] = (
    "raise",
    "escalate",
    "deescalate",
    "clear",
    "return",
    "ack",
)
_KINDS: Final[tuple[AlarmKind, ...]] = get_args(AlarmKind)
_MAX_EVENTS_PER_SAMPLE: Final = 7
_MIN_RING: Final = 16


def _param_row(values: dict[str, ParamValue]) -> NDArray[np.float64]:
    row = np.full(kn.N_PARAMS, np.nan)

    def get(key: str, default: float = math.nan) -> float:
        val = number(values, key)
        return default if val is None else val

    row[kn.P_HAS] = 1.0
    row[kn.P_HIGH], row[kn.P_HH] = get("high"), get("high_high")
    row[kn.P_LOW], row[kn.P_LL] = get("low"), get("low_low")
    db = get("deadband", 0.0)
    row[kn.P_DB_H] = get("high_deadband", db)
    row[kn.P_DB_HH] = get("high_high_deadband", db)
    row[kn.P_DB_L] = get("low_deadband", db)
    row[kn.P_DB_LL] = get("low_low_deadband", db)
    row[kn.P_ON_MS] = get("on_delay_s", 0.0) * 1000
    row[kn.P_OFF_MS] = get("off_delay_s", 0.0) * 1000
    row[kn.P_LATCH] = 1.0 if values.get("latch") is True else 0.0
    rng = values.get("range")
    row[kn.P_RMIN], row[kn.P_RMAX] = rng if isinstance(rng, tuple) else (-math.inf, math.inf)
    if "roc_limit_per_min" in values:
        row[kn.P_ROC_LIM] = get("roc_limit_per_min")
        row[kn.P_ROC_W_MS] = get("roc_window_s", 60.0) * 1000
    if "trend_window_s" in values and "trend_horizon_s" in values:
        row[kn.P_TR_W_MS] = get("trend_window_s") * 1000
        row[kn.P_TR_H_S] = get("trend_horizon_s")
        row[kn.P_TR_MIN] = get("trend_min_points", 5.0)
    if "stuck_s" in values:
        row[kn.P_STUCK_MS] = get("stuck_s") * 1000
        row[kn.P_STUCK_BAND] = get("stuck_band", 0.0)
    return row


class RuleEngine:
    """All rules of all tags; one instance per agent (not thread-safe)."""

    def __init__(self, tag_names: Sequence[str], rules: Sequence[RuleConfig]) -> None:
        """Merge and check the rule tables; raises :class:`rules.RuleConfigError` (no I/O)."""
        self.tag_names: tuple[str, ...] = tuple(tag_names)
        merged = resolve_rules(rules, self.tag_names)
        n_tags = len(self.tag_names)
        self._values: list[dict[str, ParamValue]] = [
            {} if tp is None else dict(tp.values) for tp in merged
        ]
        self._params = np.full((n_tags, kn.N_PARAMS), np.nan)
        self._params[:, kn.P_HAS] = 0.0
        self._st_i = np.zeros((n_tags, kn.N_STATE_I), dtype=np.int64)
        self._st_f = np.zeros((n_tags, kn.N_STATE_F), dtype=np.float64)
        self._st_i[:, kn.S_ROC_RING] = -1
        self._st_i[:, kn.S_TR_RING] = -1
        ring_tags: list[int] = []
        for k, tp in enumerate(merged):
            if tp is None:
                continue
            self._params[k] = _param_row(tp.values)
            for col, flag in ((kn.S_ROC_RING, kn.P_ROC_LIM), (kn.S_TR_RING, kn.P_TR_W_MS)):
                if not math.isnan(self._params[k, flag]):
                    self._st_i[k, col] = len(ring_tags)
                    ring_tags.append(k)
        self._ring_tag = np.asarray(ring_tags, dtype=np.int64)
        n_rings = len(ring_tags)
        self._meta = np.zeros((n_rings, 4), dtype=np.int64)
        self._meta[:, kn.R_CAP] = _MIN_RING
        self._meta[:, kn.R_OFF] = np.arange(n_rings, dtype=np.int64) * _MIN_RING
        self._buf_t = np.zeros(n_rings * _MIN_RING, dtype=np.int64)
        self._buf_v = np.zeros(n_rings * _MIN_RING, dtype=np.float64)
        self._out_i = np.empty((0, 4), dtype=np.int64)  # reused between batches
        self._out_f = np.empty(0, dtype=np.float64)

    @property
    def clamped_samples(self) -> int:
        """Samples processed at their tag's previous timestamp because they went back in time."""
        return int(self._st_i[:, kn.S_CLAMPED].sum())

    def warm_up(self) -> None:
        """Compile the kernel (or load it from ``NUMBA_CACHE_DIR``) without touching state."""
        e_i = np.zeros(0, dtype=np.int64)
        kn.evaluate_batch(
            np.zeros(0, dtype=np.int32),
            e_i,
            np.zeros(0, dtype=np.float64),
            np.zeros(0, dtype=np.uint8),
            self._params[:0],
            self._st_i[:0],
            self._st_f[:0],
            self._meta[:0],
            e_i,
            np.zeros(0, dtype=np.float64),
            np.zeros((0, 4), dtype=np.int64),
            np.zeros(0, dtype=np.float64),
        )

    def _grow_rings(self, tag: NDArray[np.int32]) -> None:
        if self._ring_tag.size == 0:
            return
        counts = np.bincount(tag, minlength=len(self.tag_names))
        need = self._meta[:, kn.R_N] + counts[self._ring_tag]
        caps = self._meta[:, kn.R_CAP]
        if np.all(need <= caps):
            return
        new_caps = np.where(need > caps, np.maximum(need, 2 * caps), caps)
        new_off = np.concatenate(([0], np.cumsum(new_caps)[:-1])).astype(np.int64)
        buf_t = np.zeros(int(new_caps.sum()), dtype=np.int64)
        buf_v = np.zeros(int(new_caps.sum()), dtype=np.float64)
        cnt = self._meta[:, kn.R_N]
        ring_of = np.repeat(np.arange(cnt.size), cnt)
        within = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        old = self._meta[ring_of]
        src = old[:, kn.R_OFF] + (old[:, kn.R_START] + within) % old[:, kn.R_CAP]
        dst = new_off[ring_of] + within
        buf_t[dst] = self._buf_t[src]
        buf_v[dst] = self._buf_v[src]
        self._meta[:, kn.R_OFF] = new_off
        self._meta[:, kn.R_CAP] = new_caps
        self._meta[:, kn.R_START] = 0
        self._buf_t, self._buf_v = buf_t, buf_v

    def evaluate(
        self,
        tag: NDArray[np.int32],
        ts_ms: NDArray[np.int64],
        value: NDArray[np.float64],
        quality: NDArray[np.uint8],
    ) -> list[AlarmEvent]:
        """Run every check on a batch; quality 0 is good, anything else invalid (``quality``).

        Raises ``ValueError`` (a caller bug) when the arrays differ in length or a tag index
        is outside the tag table.
        """
        tag = np.ascontiguousarray(tag, dtype=np.int32)
        ts = np.ascontiguousarray(ts_ms, dtype=np.int64)
        val = np.ascontiguousarray(value, dtype=np.float64)
        qual = np.ascontiguousarray(quality, dtype=np.uint8)
        n = tag.shape[0]
        if not (ts.shape == val.shape == qual.shape == (n,)):
            raise ValueError("tag, ts_ms, value and quality must be 1-d arrays of one length")
        if n == 0:
            return []
        if int(tag.min()) < 0 or int(tag.max()) >= len(self.tag_names):
            raise ValueError(f"tag index outside 0..{len(self.tag_names) - 1}")
        self._grow_rings(tag)
        if self._out_f.size < n * _MAX_EVENTS_PER_SAMPLE:
            self._out_i = np.empty((n * _MAX_EVENTS_PER_SAMPLE, 4), dtype=np.int64)
            self._out_f = np.empty(n * _MAX_EVENTS_PER_SAMPLE, dtype=np.float64)
        out_i, out_f = self._out_i, self._out_f
        count = kn.evaluate_batch(
            tag, ts, val, qual, self._params, self._st_i, self._st_f,
            self._meta, self._buf_t, self._buf_v, out_i, out_f,
        )  # fmt: skip
        return [_event(out_i[e], float(out_f[e]), tag, ts, val) for e in range(int(count))]

    def acknowledge(self, tag: int, ts_ms: int, alarm: AlarmKind | None = None) -> list[AlarmEvent]:
        """Acknowledge ``high`` and/or ``low`` of one tag at ``ts_ms``.

        Emits ``ack`` for an active unacknowledged alarm and ``clear`` for a latched alarm that
        returned unacknowledged; an already acknowledged or inactive alarm emits nothing.
        ``alarm`` other than None, "high" or "low" raises ``ValueError`` (nothing else latches).
        """
        if alarm not in (None, "high", "low"):
            raise ValueError(f"only high and low alarms are acknowledged, not {alarm!r}")
        if not 0 <= tag < len(self.tag_names):
            raise ValueError(f"tag index {tag} outside 0..{len(self.tag_names) - 1}")
        st = self._st_i[tag]
        latch = self._params[tag, kn.P_LATCH] == 1.0
        out: list[AlarmEvent] = []
        graded: tuple[AlarmKind, AlarmKind] = ("high", "low")
        for j, name in enumerate(graded):
            if (alarm is not None and alarm != name) or st[kn.S_UNACK + j] == 0:
                continue
            level = int(st[kn.S_LVL + j])
            if level > 0:
                out.append(AlarmEvent(ts_ms, tag, name, "ack", level, None))
            elif latch:
                out.append(AlarmEvent(ts_ms, tag, name, "clear", 0, None))
            st[kn.S_UNACK + j] = 0
        return out

    def params(self, tag: int) -> dict[str, float | bool | tuple[float, float]]:
        """The merged keys set for ``tag`` (no defaults filled in); {} for a tag without rules."""
        return dict(self._values[tag])


def _event(
    row: NDArray[np.int64],
    extra_v: float,
    tag: NDArray[np.int32],
    ts: NDArray[np.int64],
    val: NDArray[np.float64],
) -> AlarmEvent:
    i, kind, ev, level = (int(x) for x in row)
    v = float(val[i])
    name = _KINDS[kind]
    extra: dict[str, float | str] = {}
    if name == "fault" and ev == kn.EV_RAISE:
        extra["reason"] = kn.REASONS[int(extra_v)]
    elif ev in (kn.EV_RAISE, kn.EV_ESCALATE) and name in ("high", "low"):
        extra["limit"] = extra_v
    elif ev == kn.EV_RAISE and name == "roc":
        extra["rate_per_min"] = extra_v
    elif ev == kn.EV_RAISE and name in ("trend_high", "trend_low"):
        extra["eta_s"] = extra_v
    return AlarmEvent(
        ts_ms=int(ts[i]),
        tag=int(tag[i]),
        alarm=name,
        event=_EVENTS[ev],
        level=level,
        value=v if math.isfinite(v) else None,
        extra=extra,
    )
