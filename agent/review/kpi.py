"""Alarm-system performance KPIs (EEMUA 191, ANSI/ISA-18.2, IEC 62682), vectorised with numpy.

Definitions (docs/review.md says why, and the benchmark each figure is judged against; the
slow, obvious twin in tests/agent/review/naive.py implements this same text):

- An **alarm** is a ``raise`` event (any kind, sensor faults included) with
  ``from_ms <= ts < to_ms``. An **occurrence** is a retained ``raise``; an event belongs to the
  occurrence whose ``raise`` has its ``alarm_id`` and was stored before it (ids persist across
  restarts, RULES.md 1.1, so a restart does not split an occurrence, and an ``ack`` of a
  returned occurrence stays with it after the alarm was raised again). An event whose
  ``alarm_id`` has no earlier retained ``raise`` (written before ids persisted: a restart gave
  the occurrence's later events another id) belongs by position to the last ``raise`` of its
  (tag, kind) before it, in stored order; before a (tag, kind)'s first retained ``raise``, to
  none.
- **Rates**: alarms / (period / 10 min) and / (period / 1 day).
- **10-minute periods** start at ``from_ms`` (the last may be shorter); a **flood** period
  holds more than 10 alarms; ``peak`` is the largest count and ``peak_ms`` the first period
  that has it.
- **Chattering**: an alarm (tag, kind) with 3 raises within 60 s (``ts[j+2] - ts[j] <=
  60 000`` over its raises in the period); ``chattering_raises`` counts the raises in such
  triples.
- **Fleeting**: an occurrence raised in the period whose condition ended (first ``return``
  or ``clear``) less than ``fleeting_ms`` after its raise.
- **Stale**: an occurrence raised before ``to_ms``, not cleared before ``from_ms``, in the
  alarm list (raise to ``clear``, or to ``to_ms`` when not cleared) for more than 24 h.
- **Standing**: raised before ``to_ms`` and not cleared before it.
- **Bad actors**: the 10 alarms (tag, kind) with most raises (ties by tag, kind), with their
  share of all alarms; ``top10_share`` is their sum.
- **Priority**: occurrences raised in the period by the highest level they reached
  (2 critical, 1 major).
- **Time to ack / to clear**: raise → first ``ack`` / first ``clear`` of occurrences raised
  in the period; percentiles by nearest rank (the value at rank ``ceil(p/100·n)``).
- **Sensor faults per device**: raises of ``fault`` and ``stuck`` per device of the tag, and
  ``device_lost`` events per device.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from agent.review.history import EVENTS, KINDS, AlarmLog

__all__ = ["PERCENTILES", "AlarmKpis", "BadActor", "alarm_kpis", "nearest_rank", "occurrences"]

TEN_MIN_MS: Final = 600_000
DAY_MS: Final = 86_400_000
FLOOD_ABOVE: Final = 10
CHATTER_RAISES: Final = 3
CHATTER_WINDOW_MS: Final = 60_000
STALE_MS: Final = DAY_MS
PERCENTILES: Final = (50, 90, 95)
_BIG: Final = np.iinfo(np.int64).max
_RAISE, _ESC, _DEESC, _CLEAR, _RETURN, _ACK = (EVENTS.index(e) for e in EVENTS)
_FAULT, _STUCK = KINDS.index("fault"), KINDS.index("stuck")


@dataclass(frozen=True, slots=True)
class BadActor:
    tag: str
    alarm: str
    count: int
    share: float


@dataclass(frozen=True, slots=True)
class AlarmKpis:
    """Every figure of one period; times in ms, shares in 0..1."""

    from_ms: int
    to_ms: int
    alarms: int
    per_10min: float
    per_day: float
    periods: int
    flood_periods: int
    flood_share: float
    peak: int
    peak_ms: int
    counts_10min: tuple[int, ...]
    chattering: int
    chattering_raises: int
    fleeting: int
    fleeting_ms: int
    stale: int
    standing: int
    standing_list: tuple[tuple[str, str, int, int], ...]  # tag, alarm, level, raised ms
    bad_actors: tuple[BadActor, ...]
    top10_share: float
    priority: Mapping[int, int]  # highest level reached → occurrences
    ack_ms: Mapping[int, int]  # percentile → ms (absent when nothing was acknowledged)
    acked: int
    clear_ms: Mapping[int, int]
    cleared: int
    faults_by_device: Mapping[str, tuple[int, int, int]]  # device → (fault, stuck, device_lost)


def nearest_rank(sorted_values: NDArray[np.int64], p: int) -> int:
    """The ``p``-th percentile by nearest rank of an ascending, non-empty array."""
    n = int(sorted_values.shape[0])
    return int(sorted_values[max(1, math.ceil(p / 100 * n)) - 1])


def occurrences(log: AlarmLog, valid: NDArray[np.bool_]) -> tuple[NDArray[np.int64], int]:
    """The occurrence of each event (-1: none, or not ``valid``) and how many there are."""
    n = len(log)
    key = log.tag.astype(np.int64) * len(KINDS) + log.kind
    idx = np.flatnonzero(valid)
    order = idx[np.lexsort((idx, key[idx]))]  # by (tag, kind), stored order within
    k = key[order]
    r = (log.event[order] == _RAISE).astype(np.int64)
    count = np.cumsum(r)  # raises so far, over all keys
    first = np.ones(k.shape[0], bool)
    first[1:] = k[1:] != k[:-1]
    before_group = np.maximum.accumulate(np.where(first, count - r, 0))
    inside = count - before_group > 0  # at or after the group's first raise
    occ = np.full(n, -1, np.int64)
    occ[order] = np.where(inside, count - 1, -1)
    # by alarm_id where its raise was stored earlier; the position above otherwise
    raises = np.flatnonzero(valid & (log.event == _RAISE))
    first = np.full(len(log.occ_ids) + 1, _BIG, np.int64)
    np.minimum.at(first, log.occ[raises], raises)
    own = first[log.occ] if n else np.empty(0, np.int64)
    by_id = valid & (log.event != _RAISE) & (own < np.arange(n))
    occ[by_id] = occ[own[by_id]]
    return occ, int(r.sum())


def _first_per_occ(
    log: AlarmLog, occ: NDArray[np.int64], n_occ: int, mask: NDArray[np.bool_]
) -> NDArray[np.int64]:
    sel = mask & (occ >= 0)
    out = np.full(n_occ, _BIG, np.int64)
    np.minimum.at(out, occ[sel], log.ts_ms[sel])
    return out


def _percentiles(d: NDArray[np.int64]) -> dict[int, int]:
    if not d.shape[0]:
        return {}
    s = np.sort(d)
    return {p: nearest_rank(s, p) for p in PERCENTILES}


def alarm_kpis(
    log: AlarmLog,
    *,
    from_ms: int,
    to_ms: int,
    fleeting_ms: int,
    device_of: Mapping[str, str],
    events: Sequence[Mapping[str, Any]] = (),
) -> AlarmKpis:
    """Compute every KPI of ``[from_ms, to_ms)`` from ``log`` (events at ``ts >= to_ms`` are
    ignored, as if the report were made at ``to_ms``). ``device_of`` maps tag → device (a tag
    missing from it counts under ``"?"``); ``events`` are event bodies (``device_lost``)."""
    if to_ms <= from_ms:
        raise ValueError("the period must end after it starts (--to after --from)")
    ts, kind, ev = log.ts_ms, log.kind, log.event
    before = ts < to_ms
    in_period = before & (ts >= from_ms)
    is_raise = ev == _RAISE
    raises = np.flatnonzero(is_raise & in_period)
    n_alarms = int(raises.shape[0])
    span = to_ms - from_ms

    # rates and 10-minute periods
    periods = -(-span // TEN_MIN_MS)
    counts = np.bincount((ts[raises] - from_ms) // TEN_MIN_MS, minlength=periods)
    flood = int((counts > FLOOD_ABOVE).sum())
    peak_i = int(np.argmax(counts)) if periods else 0

    # chattering: raises grouped by (tag, kind), in time order within a group
    key = log.tag[raises].astype(np.int64) * len(KINDS) + kind[raises]
    order = np.lexsort((ts[raises], key))
    k_sorted, t_sorted = key[order], ts[raises][order]
    step = CHATTER_RAISES - 1
    hit = (
        (k_sorted[step:] == k_sorted[:-step])
        & (t_sorted[step:] - t_sorted[:-step] <= CHATTER_WINDOW_MS)
        if k_sorted.shape[0] > step
        else np.zeros(0, bool)
    )
    marked = np.zeros(k_sorted.shape[0], bool)
    for j in range(CHATTER_RAISES):
        marked[j : j + hit.shape[0]] |= hit
    chattering = int(np.unique(k_sorted[marked]).shape[0])

    # occurrences
    occ, n_occ = occurrences(log, before)
    valid = before & (occ >= 0)
    raise_ts = _first_per_occ(log, occ, n_occ, valid & is_raise)
    has_raise = raise_ts != _BIG
    clear_ts = _first_per_occ(log, occ, n_occ, valid & (ev == _CLEAR))
    end_ts = _first_per_occ(log, occ, n_occ, valid & ((ev == _CLEAR) | (ev == _RETURN)))
    ack_ts = _first_per_occ(log, occ, n_occ, valid & (ev == _ACK))
    max_level = np.zeros(n_occ, np.int64)
    np.maximum.at(max_level, occ[valid], log.level[valid].astype(np.int64))
    occ_kind = np.zeros(n_occ, np.int64)
    occ_tag = np.zeros(n_occ, np.int64)
    r_all = np.flatnonzero(valid & is_raise)
    occ_kind[occ[r_all]] = kind[r_all]
    occ_tag[occ[r_all]] = log.tag[r_all]
    raised_in = has_raise & (raise_ts >= from_ms)

    ends_after = clear_ts >= from_ms  # also true when never cleared (_BIG)
    listed_until = np.minimum(clear_ts, to_ms)
    stale = int((has_raise & ends_after & (listed_until - raise_ts > STALE_MS)).sum())
    standing_mask = has_raise & (clear_ts == _BIG)
    standing_idx = np.flatnonzero(standing_mask)
    standing_list = tuple(
        sorted(
            (
                log.tags[int(occ_tag[o])],
                KINDS[int(occ_kind[o])],
                int(max_level[o]),
                int(raise_ts[o]),
            )
            for o in standing_idx
        )
    )

    fleeting = int((raised_in & (end_ts != _BIG) & (end_ts - raise_ts < fleeting_ms)).sum())

    # bad actors
    uniq, n_per = np.unique(key, return_counts=True)
    ranked = sorted(
        (
            (-int(c), log.tags[int(u) // len(KINDS)], KINDS[int(u) % len(KINDS)])
            for u, c in zip(uniq.tolist(), n_per.tolist(), strict=True)
        )
    )[:10]
    actors = tuple(BadActor(t, a, -c, -c / n_alarms) for c, t, a in ranked)

    levels, lv_counts = np.unique(max_level[raised_in], return_counts=True)
    acked = raised_in & (ack_ts != _BIG)
    cleared = raised_in & (clear_ts != _BIG)

    faults: dict[str, list[int]] = {}
    for col, kind_code in ((0, _FAULT), (1, _STUCK)):
        sel = raises[kind[raises] == kind_code]
        tags_sel, n_sel = np.unique(log.tag[sel], return_counts=True)
        for t, c in zip(tags_sel.tolist(), n_sel.tolist(), strict=True):
            faults.setdefault(device_of.get(log.tags[t], "?"), [0, 0, 0])[col] += c
    for e in events:
        ets = e.get("ts")
        if e.get("kind") == "device_lost" and isinstance(ets, int) and from_ms <= ets < to_ms:
            faults.setdefault(str(e.get("device", "?")), [0, 0, 0])[2] += 1

    return AlarmKpis(
        from_ms=from_ms,
        to_ms=to_ms,
        alarms=n_alarms,
        per_10min=n_alarms / (span / TEN_MIN_MS),
        per_day=n_alarms / (span / DAY_MS),
        periods=int(periods),
        flood_periods=flood,
        flood_share=flood / periods,
        peak=int(counts[peak_i]) if periods else 0,
        peak_ms=from_ms + peak_i * TEN_MIN_MS,
        counts_10min=tuple(int(c) for c in counts.tolist()),
        chattering=chattering,
        chattering_raises=int(marked.sum()),
        fleeting=fleeting,
        fleeting_ms=fleeting_ms,
        stale=stale,
        standing=int(standing_idx.shape[0]),
        standing_list=standing_list,
        bad_actors=actors,
        top10_share=sum(a.share for a in actors),
        priority={
            int(lv): int(c) for lv, c in zip(levels.tolist(), lv_counts.tolist(), strict=True)
        },
        ack_ms=_percentiles((ack_ts - raise_ts)[acked]),
        acked=int(acked.sum()),
        clear_ms=_percentiles((clear_ts - raise_ts)[cleared]),
        cleared=int(cleared.sum()),
        faults_by_device={d: (v[0], v[1], v[2]) for d, v in sorted(faults.items())},
    )
