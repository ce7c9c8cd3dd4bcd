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
- Window checks (roc, trend) share one ring of recent valid samples per tag, all rings in one
  flat array. A ring doubles (never shrinks) when the kernel finds it full before a sample, so
  sizing needs no guess about sample rates; growth goes into slack at the end of the array and
  only rarely re-packs it (amortised O(1) per sample, a few times while the windows fill).
- Per call the Python overhead is a few array checks and one ``AlarmEvent`` per transition:
  the kernel writes into output buffers kept between calls, grown only when a batch needs more.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import fields
from typing import Final, get_args

import numpy as np
from numpy.typing import NDArray

from rules import layout as kn
from rules.config import RuleConfig
from rules.events import AlarmEvent, AlarmKind, Transition
from rules.native import Kernels, c_array, rule_kernels
from rules.params import ParamValue, number, resolve_rules
from rules.state import AlarmState, TagState, params_hash

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
_MIN_RING: Final = 16  # rows; capacities stay powers of two
_MIN_OUT: Final = 1024  # event rows, doubled when a batch needs more


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
        for k, tp in enumerate(merged):
            if tp is not None:
                self._params[k] = _param_row(tp.values)
        p = self._params
        self._roc_on = ~np.isnan(p[:, kn.P_ROC_LIM])  # the window checks each tag has
        self._tr_on = ~np.isnan(p[:, kn.P_TR_W_MS])
        ring = self._roc_on | self._tr_on
        n_rings = int(ring.sum())
        self._st_i[ring, kn.S_RING_CAP] = _MIN_RING
        self._st_i[ring, kn.S_RING_OFF] = np.arange(n_rings, dtype=np.int64) * _MIN_RING
        self._buf = np.zeros((n_rings * _MIN_RING, 2), dtype=np.float64)  # rows (ts, value)
        self._used = n_rings * _MIN_RING  # rows of _buf given to rings (the rest is slack)
        self._out_i = np.empty((_MIN_OUT, 4), dtype=np.int64)  # reused between batches
        self._out_f = np.empty(_MIN_OUT, dtype=np.float64)
        # tag → kinds whose restored occurrence ends with clear(config_changed) at its next sample
        self._changed: dict[int, list[AlarmKind]] = {}

    @property
    def kernels(self) -> Kernels:
        """The kernels this engine runs (native module or numba's JIT; loaded on first use,
        once per process: :func:`rules.native.rule_kernels`)."""
        return rule_kernels()

    @property
    def clamped_samples(self) -> int:
        """Samples processed at their tag's previous timestamp because they went back in time."""
        return int(self._st_i[:, kn.S_CLAMPED].sum())

    def warm_up(self) -> None:
        """Load the kernels (the native module, or numba's JIT from ``NUMBA_CACHE_DIR``,
        compiling on a cold cache) and run them once without touching state."""
        none = np.zeros(0, dtype=np.int64)
        self.kernels.evaluate_batch(
            0, 0,
            np.zeros(0, dtype=np.int32), none, np.zeros(0, dtype=np.float64),
            np.zeros(0, dtype=np.uint8), self._params, self._st_i, self._st_f, self._buf,
            self._out_i, self._out_f,
        )  # fmt: skip
        self.kernels.move_rings(self._params, self._st_i, self._buf, self._buf, none, none, none)

    def _grow_rings(self) -> None:
        """Double every full ring: into the slack of ``_buf`` when it fits, else compact all
        rings into a new buffer with 25 % slack (rare: a few times while the windows fill)."""
        st = self._st_i
        cap = st[:, kn.S_RING_CAP]
        head = st[:, kn.S_HEAD]
        oldest = np.minimum(
            np.where(self._roc_on, st[:, kn.S_ROC_SEQ], head),
            np.where(self._tr_on, st[:, kn.S_TR_SEQ], head),
        )
        full = np.flatnonzero((cap > 0) & (head - oldest >= cap))
        new_cap = cap[full] * 2
        extra = int(new_cap.sum())
        if self._used + extra <= self._buf.shape[0]:
            new_off = self._used + np.cumsum(new_cap) - new_cap
            self.kernels.move_rings(self._params, st, self._buf, self._buf, full, new_off, new_cap)
            self._used += extra
            return
        caps = cap.copy()
        caps[full] = new_cap
        rings = np.flatnonzero(caps > 0)
        live = int(caps.sum())
        buf = np.zeros((live + live // 4, 2), dtype=np.float64)
        new_off = np.cumsum(caps[rings]) - caps[rings]
        self.kernels.move_rings(self._params, st, self._buf, buf, rings, new_off, caps[rings])
        self._buf, self._used = buf, live

    def _grow_out(self, count: int) -> None:
        size = 2 * self._out_f.shape[0]
        out_i = np.empty((size, 4), dtype=np.int64)
        out_f = np.empty(size, dtype=np.float64)
        out_i[:count] = self._out_i[:count]
        out_f[:count] = self._out_f[:count]
        self._out_i, self._out_f = out_i, out_f

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
        tag = c_array(tag, np.int32)
        ts = c_array(ts_ms, np.int64)
        val = c_array(value, np.float64)
        qual = c_array(quality, np.uint8)
        n = tag.shape[0]
        if not (ts.shape == val.shape == qual.shape == (n,)):
            raise ValueError("tag, ts_ms, value and quality must be 1-d arrays of one length")
        if n == 0:
            return []
        if int(tag.min()) < 0 or int(tag.max()) >= len(self.tag_names):
            raise ValueError(f"tag index outside 0..{len(self.tag_names) - 1}")
        if self._changed:
            hit = np.flatnonzero(np.isin(tag, np.fromiter(self._changed, dtype=np.int32)))
            if hit.size:  # rare (once per changed tag after a restart or reload): split here
                p = int(hit[0])
                k = int(tag[p])
                v = float(val[p])
                ends = [
                    AlarmEvent(
                        int(ts[p]), k, kind, "clear", 0, v if math.isfinite(v) else None,
                        {"reason": "config_changed"},
                    )
                    for kind in self._changed.pop(k)
                ]  # fmt: skip
                head = self.evaluate(tag[:p], ts[:p], val[:p], qual[:p])
                return head + ends + self.evaluate(tag[p:], ts[p:], val[p:], qual[p:])
        count, i = 0, 0
        while True:
            count, i = self.kernels.evaluate_batch(
                i, count, tag, ts, val, qual, self._params, self._st_i, self._st_f,
                self._buf, self._out_i, self._out_f,
            )  # fmt: skip
            if i >= n:
                break
            if self._out_f.shape[0] - count < kn.MAX_EVENTS:
                self._grow_out(count)
            else:
                self._grow_rings()
        if count == 0:
            return []
        return _events(self._out_i[:count], self._out_f[:count], tag, ts, val)

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

    def params_hash(self, tag: int) -> str:
        """Hash of the tag's resolved parameters: restored state applies only when it matches."""
        return params_hash(self._values[tag])

    def open_tags(self) -> list[int]:
        """The tags whose :meth:`export_state` holds alarms (a level, or a latch not yet
        acknowledged), ascending: one array pass instead of a call per tag."""
        cols = [col for _, col in _STATE_COLS] + [kn.S_UNACK, kn.S_UNACK + 1]
        return [int(k) for k in np.flatnonzero(self._st_i[:, cols].any(axis=1))]

    def export_state(self, tag: int) -> TagState:
        """The tag's persisted state (levels and acknowledgements; design/RULES.md). Alarm ids,
        raise times and fault reasons are left at their defaults: the caller knows them."""
        st = self._st_i[tag]
        alarms: dict[str, AlarmState] = {}
        for kind, col in _STATE_COLS:
            level = int(st[col])
            unacked = kind in ("high", "low") and bool(st[kn.S_UNACK + (kind == "low")])
            if level or unacked:
                alarms[kind] = AlarmState(level=level, unacked=unacked)
        return TagState(params_hash=self.params_hash(tag), alarms=alarms)

    def restore_state(self, tag: int, state: TagState) -> bool:
        """Start ``tag`` from ``state`` (timers and windows empty) when its parameters hash
        matches, and return True. Otherwise the tag starts from level 0 and each open alarm of
        ``state`` emits ``clear`` with ``reason: "config_changed"`` at the tag's next sample;
        returns False. Raises ``ValueError`` for an unknown kind or a level out of range."""
        if not 0 <= tag < len(self.tag_names):
            raise ValueError(f"tag index {tag} outside 0..{len(self.tag_names) - 1}")
        cols = dict(_STATE_COLS)
        for kind, alarm in state.alarms.items():
            if kind not in cols or not 0 <= alarm.level <= (2 if kind in ("high", "low") else 1):
                raise ValueError(f"{self.tag_names[tag]}: bad state for {kind!r}")
        if state.params_hash != self.params_hash(tag):
            ending = [k for k in _KINDS if k in state.alarms and state.alarms[k].open]
            if ending:
                self._changed[tag] = ending
            return False
        self._changed.pop(tag, None)
        st = self._st_i[tag]
        for kind, col in _STATE_COLS:
            alarm = state.alarms.get(kind, AlarmState())
            st[col] = alarm.level
            if kind in ("high", "low"):
                st[kn.S_UNACK + (kind == "low")] = int(alarm.unacked)
        return True

    def params(self, tag: int) -> dict[str, float | bool | tuple[float, float]]:
        """The merged keys set for ``tag`` (no defaults filled in); {} for a tag without rules."""
        return dict(self._values[tag])


def _extra_keys() -> tuple[tuple[str | None, ...], ...]:
    """The extra field each (kind, event) carries, if any (design/RULES.md, docs/rules.md)."""
    table: list[tuple[str | None, ...]] = []
    for name in _KINDS:
        keys: list[str | None] = []
        for ev in range(len(_EVENTS)):
            key: str | None = None
            if name == "fault" and ev == kn.EV_RAISE:
                key = "reason"
            elif ev in (kn.EV_RAISE, kn.EV_ESCALATE) and name in ("high", "low"):
                key = "limit"
            elif ev == kn.EV_RAISE and name == "roc":
                key = "rate_per_min"
            elif ev == kn.EV_RAISE and name in ("trend_high", "trend_low"):
                key = "eta_s"
            keys.append(key)
        table.append(tuple(keys))
    return tuple(table)


_EXTRA_KEYS: Final = _extra_keys()
_STATE_COLS: Final[tuple[tuple[AlarmKind, int], ...]] = (
    ("fault", kn.S_FAULT),
    ("high", kn.S_LVL),
    ("low", kn.S_LVL + 1),
    ("roc", kn.S_ROC),
    ("trend_high", kn.S_TRH),
    ("trend_low", kn.S_TRL),
    ("stuck", kn.S_STUCK),
)


_FIELDS: Final = ("ts_ms", "tag", "alarm", "event", "level", "value", "extra")
if tuple(f.name for f in fields(AlarmEvent)) != _FIELDS:  # pragma: no cover - a guard for edits
    raise ImportError("rules.engine._events must set every field of AlarmEvent")
_SETTERS: Final = tuple(getattr(AlarmEvent, name).__set__ for name in _FIELDS)


def _events(
    rows: NDArray[np.int64],
    extras: NDArray[np.float64],
    tag: NDArray[np.int32],
    ts: NDArray[np.int64],
    val: NDArray[np.float64],
) -> list[AlarmEvent]:
    """AlarmEvents for the kernel's event rows: one vectorised gather per column, then plain
    Python values. A batch can hold thousands of events, so this is written for speed: each
    event is built by setting its slots directly (the frozen dataclass's ``__init__`` goes
    through ``object.__setattr__`` per field, ~2x slower; AlarmEvent has no
    ``__post_init__``, so the objects are the same, see tests/rules/test_kernel_paths.py)."""
    at = rows[:, 0]
    new, isfinite, reasons = object.__new__, math.isfinite, kn.REASONS
    kinds, evs, keys = _KINDS, _EVENTS, _EXTRA_KEYS
    s_ts, s_tag, s_alarm, s_event, s_level, s_value, s_extra = _SETTERS
    out: list[AlarmEvent] = []
    append = out.append
    for t, k, v, kind, ev, level, x in zip(
        ts[at].tolist(), tag[at].tolist(), val[at].tolist(), rows[:, 1].tolist(),
        rows[:, 2].tolist(), rows[:, 3].tolist(), extras.tolist(), strict=True,
    ):  # fmt: skip
        key = keys[kind][ev]
        e = new(AlarmEvent)
        s_ts(e, t)
        s_tag(e, k)
        s_alarm(e, kinds[kind])
        s_event(e, evs[ev])
        s_level(e, level)
        s_value(e, v if isfinite(v) else None)
        s_extra(e, {} if key is None else {key: reasons[int(x)] if key == "reason" else x})
        append(e)
    return out
