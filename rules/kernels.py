"""The numba kernel: one pass over a batch of samples, all tags at once (design/RULES.md).

Everything here is boring array code. Parameters, state and ring buffers are numpy arrays owned
by :class:`rules.engine.RuleEngine`; the kernel mutates the state in place and writes one row per
alarm transition into preallocated output arrays. The column constants below are module globals
and therefore frozen at compile time, which is what we want for layout constants; every tunable
value is passed in ``params``.

Invariants the caller guarantees:
- ``params``, ``st_i``, ``st_f`` have one row per tag; ``params[k, P_HAS] == 0`` means the tag has
  no checks and its samples are skipped at the cost of one load.
- Each ring has room for its current contents plus every sample of its tag in the batch.
- ``out_i``/``out_f`` have room for 7 events per sample (the most one valid sample can emit).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = [
    "EV_ACK",
    "EV_CLEAR",
    "EV_DEESCALATE",
    "EV_ESCALATE",
    "EV_RAISE",
    "EV_RETURN",
    "KINDS",
    "N_PARAMS",
    "N_STATE_F",
    "N_STATE_I",
    "REASONS",
    "evaluate_batch",
]

KINDS = ("fault", "high", "low", "roc", "trend_high", "trend_low", "stuck")
K_FAULT, K_HIGH, K_LOW, K_ROC, K_TRH, K_TRL, K_STUCK = range(7)
EV_RAISE, EV_ESCALATE, EV_DEESCALATE, EV_CLEAR, EV_RETURN, EV_ACK = range(6)
REASONS = ("quality", "nan", "range")

# params columns (float64; NaN = not set / check off)
P_HAS = 0
P_HIGH, P_HH, P_LOW, P_LL = 1, 2, 3, 4
P_DB_H, P_DB_HH, P_DB_L, P_DB_LL = 5, 6, 7, 8
P_ON_MS, P_OFF_MS, P_LATCH = 9, 10, 11
P_RMIN, P_RMAX = 12, 13
P_ROC_LIM, P_ROC_W_MS = 14, 15
P_TR_W_MS, P_TR_H_S, P_TR_MIN = 16, 17, 18
P_STUCK_MS, P_STUCK_BAND = 19, 20
N_PARAMS = 21

# int64 state columns; index 0 = high, 1 = low for the graded-alarm pairs
S_FAULT = 0
S_LVL = 1  # 1, 2
S_UNACK = 3  # 3, 4
S_TDIR = 5  # 5, 6: 0 no timer, 1 on-delay running, -1 off-delay running
S_TSTART = 7  # 7, 8
S_LAST_TS, S_HAS_LAST, S_CLAMPED = 9, 10, 11
S_ROC, S_TRH, S_TRL, S_STUCK = 12, 13, 14, 15
S_RUN_TS, S_HAS_RUN = 16, 17
S_ROC_RING, S_TR_RING = 18, 19  # ring ids, -1 = none
S_TR_ORIGIN_TS, S_TR_EVICT = 20, 21
N_STATE_I = 22

# float64 state columns
F_RUN_V, F_TR_ORIGIN_V, F_SN, F_SX, F_SY, F_SXX, F_SXY = 0, 1, 2, 3, 4, 5, 6
N_STATE_F = 7

# ring meta columns (int64): offset into the flat buffers, capacity, index of oldest, count
R_OFF, R_CAP, R_START, R_N = 0, 1, 2, 3


@njit(cache=True)
def _emit(out_i, out_f, n, i, kind, ev, level, extra):  # type: ignore[no-untyped-def]
    out_i[n, 0] = i
    out_i[n, 1] = kind
    out_i[n, 2] = ev
    out_i[n, 3] = level
    out_f[n] = extra
    return n + 1


@njit(cache=True)
def _target(v, c, lim1, lim2, db1, db2, s):  # type: ignore[no-untyped-def]
    """Target level of a graded alarm; ``s`` = 1 for high, -1 for low (mirrors the limits)."""
    x = s * v
    if not math.isnan(lim2) and (x >= s * lim2 or (c == 2 and x >= s * lim2 - db2)):
        return 2
    if not math.isnan(lim1) and (x >= s * lim1 or (c >= 1 and x >= s * lim1 - db1)):
        return 1
    return 0


@njit(cache=True)
def _graded(p, st, j, i, t, v, out_i, out_f, n):  # type: ignore[no-untyped-def]
    """Update the high (j=0) or low (j=1) alarm of one tag at valid sample ``i``."""
    if j == 0:
        lim1, lim2, db1, db2, s, kind = p[P_HIGH], p[P_HH], p[P_DB_H], p[P_DB_HH], 1.0, K_HIGH
    else:
        lim1, lim2, db1, db2, s, kind = p[P_LOW], p[P_LL], p[P_DB_L], p[P_DB_LL], -1.0, K_LOW
    if math.isnan(lim1) and math.isnan(lim2):
        return n
    c = st[S_LVL + j]
    tgt = _target(v, c, lim1, lim2, db1, db2, s)
    if tgt == c:
        st[S_TDIR + j] = 0
        return n
    d = 1 if tgt > c else -1
    if st[S_TDIR + j] != d:
        st[S_TDIR + j] = d
        st[S_TSTART + j] = t
    delay = p[P_ON_MS] if d == 1 else p[P_OFF_MS]
    if float(t - st[S_TSTART + j]) < delay:
        return n
    st[S_TDIR + j] = 0
    st[S_LVL + j] = tgt
    if c == 0:
        st[S_UNACK + j] = 1
        return _emit(out_i, out_f, n, i, kind, EV_RAISE, tgt, lim1 if tgt == 1 else lim2)
    if tgt > c:
        st[S_UNACK + j] = 1
        return _emit(out_i, out_f, n, i, kind, EV_ESCALATE, tgt, lim2)
    if tgt > 0:
        return _emit(out_i, out_f, n, i, kind, EV_DEESCALATE, tgt, math.nan)
    if p[P_LATCH] == 1.0 and st[S_UNACK + j] == 1:
        return _emit(out_i, out_f, n, i, kind, EV_RETURN, 0, math.nan)
    st[S_UNACK + j] = 0
    return _emit(out_i, out_f, n, i, kind, EV_CLEAR, 0, math.nan)


@njit(cache=True)
def _ring_push(meta, buf_t, buf_v, r, t, v):  # type: ignore[no-untyped-def]
    if meta[r, R_N] >= meta[r, R_CAP]:
        raise RuntimeError("rule ring buffer full (engine sizing bug)")
    pos = meta[r, R_OFF] + (meta[r, R_START] + meta[r, R_N]) % meta[r, R_CAP]
    buf_t[pos] = t
    buf_v[pos] = v
    meta[r, R_N] += 1


@njit(cache=True)
def _ring_pop(meta, r):  # type: ignore[no-untyped-def]
    meta[r, R_START] = (meta[r, R_START] + 1) % meta[r, R_CAP]
    meta[r, R_N] -= 1


@njit(cache=True)
def _roc(p, st, meta, buf_t, buf_v, i, t, v, out_i, out_f, n):  # type: ignore[no-untyped-def]
    r = st[S_ROC_RING]
    w = p[P_ROC_W_MS]
    while meta[r, R_N] > 0 and float(t - buf_t[meta[r, R_OFF] + meta[r, R_START]]) > w:
        _ring_pop(meta, r)
    _ring_push(meta, buf_t, buf_v, r, t, v)
    first = meta[r, R_OFF] + meta[r, R_START]
    t_ref = buf_t[first]
    if t_ref == t:
        return n
    rate = (v - buf_v[first]) / (float(t - t_ref) / 60000.0)
    active = 1 if abs(rate) >= p[P_ROC_LIM] else 0
    if active == st[S_ROC]:
        return n
    st[S_ROC] = active
    if active == 1:
        return _emit(out_i, out_f, n, i, K_ROC, EV_RAISE, 1, rate)
    return _emit(out_i, out_f, n, i, K_ROC, EV_CLEAR, 0, math.nan)


@njit(cache=True)
def _trend_rebase(st, sf, meta, buf_t, buf_v, r):  # type: ignore[no-untyped-def]
    """Recompute the running sums from the ring with the oldest sample as origin."""
    off, cap, start, cnt = meta[r, R_OFF], meta[r, R_CAP], meta[r, R_START], meta[r, R_N]
    o_t = buf_t[off + start]
    o_v = buf_v[off + start]
    sx = sy = sxx = sxy = 0.0
    for q in range(cnt):
        pos = off + (start + q) % cap
        x = float(buf_t[pos] - o_t) / 1000.0
        y = buf_v[pos] - o_v
        sx += x
        sy += y
        sxx += x * x
        sxy += x * y
    st[S_TR_ORIGIN_TS] = o_t
    st[S_TR_EVICT] = 0
    sf[F_TR_ORIGIN_V] = o_v
    sf[F_SN] = float(cnt)
    sf[F_SX] = sx
    sf[F_SY] = sy
    sf[F_SXX] = sxx
    sf[F_SXY] = sxy


@njit(cache=True)
def _trend_add(st, sf, t, v, sign):  # type: ignore[no-untyped-def]
    x = float(t - st[S_TR_ORIGIN_TS]) / 1000.0
    y = v - sf[F_TR_ORIGIN_V]
    sf[F_SN] += sign
    sf[F_SX] += sign * x
    sf[F_SY] += sign * y
    sf[F_SXX] += sign * x * x
    sf[F_SXY] += sign * x * y


@njit(cache=True)
def _trend(p, st, sf, meta, buf_t, buf_v, i, t, v, out_i, out_f, n):  # type: ignore[no-untyped-def]
    r = st[S_TR_RING]
    w = p[P_TR_W_MS]
    while meta[r, R_N] > 0:
        first = meta[r, R_OFF] + meta[r, R_START]
        if float(t - buf_t[first]) < w:
            break
        _trend_add(st, sf, buf_t[first], buf_v[first], -1.0)
        _ring_pop(meta, r)
        st[S_TR_EVICT] += 1
    _ring_push(meta, buf_t, buf_v, r, t, v)
    if meta[r, R_N] == 1:
        _trend_rebase(st, sf, meta, buf_t, buf_v, r)
    elif st[S_TR_EVICT] >= meta[r, R_N]:
        _trend_rebase(st, sf, meta, buf_t, buf_v, r)  # bounds float drift, amortised O(1)
    else:
        _trend_add(st, sf, t, v, 1.0)
    cnt = meta[r, R_N]
    if float(cnt) < p[P_TR_MIN] or buf_t[meta[r, R_OFF] + meta[r, R_START]] == t:
        return n
    # sums are exact for grid-like data (small integers, whole ms), so the slope's sign is too
    sn, sx, sy = sf[F_SN], sf[F_SX], sf[F_SY]
    den = sn * sf[F_SXX] - sx * sx
    if not den > 0.0:
        return n  # only reachable through rounding when the spread is far below 1 ms
    b = (sn * sf[F_SXY] - sx * sy) / den
    xt = float(t - st[S_TR_ORIGIN_TS]) / 1000.0
    a = (sy + b * (sn * xt - sx)) / sn + sf[F_TR_ORIGIN_V]
    pred = a + b * p[P_TR_H_S]
    for j in range(2):
        lim = p[P_HIGH + 2 * j] if not math.isnan(p[P_HIGH + 2 * j]) else p[P_HH + 2 * j]
        if math.isnan(lim):
            continue
        if j == 0:
            active = st[S_LVL] == 0 and b > 0.0 and pred >= lim
        else:
            active = st[S_LVL + 1] == 0 and b < 0.0 and pred <= lim
        act = 1 if active else 0
        if act == st[S_TRH + j]:
            continue
        st[S_TRH + j] = act
        if act == 1:
            eta = max((lim - a) / b, 0.0)
            n = _emit(out_i, out_f, n, i, K_TRH + j, EV_RAISE, 1, eta)
        else:
            n = _emit(out_i, out_f, n, i, K_TRH + j, EV_CLEAR, 0, math.nan)
    return n


@njit(cache=True)
def _stuck(p, st, sf, i, t, v, out_i, out_f, n):  # type: ignore[no-untyped-def]
    if st[S_HAS_RUN] == 0 or abs(v - sf[F_RUN_V]) > p[P_STUCK_BAND]:
        st[S_HAS_RUN] = 1
        st[S_RUN_TS] = t
        sf[F_RUN_V] = v
        if st[S_STUCK] == 1:
            st[S_STUCK] = 0
            n = _emit(out_i, out_f, n, i, K_STUCK, EV_CLEAR, 0, math.nan)
    if st[S_STUCK] == 0 and float(t - st[S_RUN_TS]) >= p[P_STUCK_MS]:
        st[S_STUCK] = 1
        n = _emit(out_i, out_f, n, i, K_STUCK, EV_RAISE, 1, math.nan)
    return n


@njit(cache=True)
def evaluate_batch(tag, ts, value, quality, params, st_i, st_f, meta, buf_t, buf_v, out_i, out_f):  # type: ignore[no-untyped-def]
    """Process samples in input order; returns the number of event rows written.

    Event rows: ``out_i[e] = (sample index, kind, event, level)``, ``out_f[e]`` = the extra
    value (limit, reason index, rate_per_min, eta_s; NaN when none). A sample whose timestamp is
    earlier than its tag's previous one is processed at the previous timestamp and counted in
    ``S_CLAMPED`` (windows and timers must not run backwards).
    """
    n = 0
    for i in range(tag.shape[0]):
        k = tag[i]
        p = params[k]
        if p[P_HAS] == 0.0:
            continue
        st = st_i[k]
        sf = st_f[k]
        t = ts[i]
        if st[S_HAS_LAST] == 1 and t < st[S_LAST_TS]:
            t = st[S_LAST_TS]
            st[S_CLAMPED] += 1
        st[S_LAST_TS] = t
        st[S_HAS_LAST] = 1
        v = value[i]
        reason = -1
        if quality[i] != 0:
            reason = 0
        elif not np.isfinite(v):
            reason = 1
        elif v < p[P_RMIN] or v > p[P_RMAX]:
            reason = 2
        if reason >= 0:
            st[S_TDIR] = 0
            st[S_TDIR + 1] = 0
            if st[S_FAULT] == 0:
                st[S_FAULT] = 1
                n = _emit(out_i, out_f, n, i, K_FAULT, EV_RAISE, 1, float(reason))
            continue
        if st[S_FAULT] == 1:
            st[S_FAULT] = 0
            n = _emit(out_i, out_f, n, i, K_FAULT, EV_CLEAR, 0, math.nan)
        n = _graded(p, st, 0, i, t, v, out_i, out_f, n)
        n = _graded(p, st, 1, i, t, v, out_i, out_f, n)
        if st[S_ROC_RING] >= 0:
            n = _roc(p, st, meta, buf_t, buf_v, i, t, v, out_i, out_f, n)
        if st[S_TR_RING] >= 0:
            n = _trend(p, st, sf, meta, buf_t, buf_v, i, t, v, out_i, out_f, n)
        if not math.isnan(p[P_STUCK_MS]):
            n = _stuck(p, st, sf, i, t, v, out_i, out_f, n)
    return n
