"""The numba kernels: one pass over a batch of samples, all tags at once (design/RULES.md).

Everything here is boring array code. Parameters, state and the ring buffer are numpy arrays
owned by :class:`rules.engine.RuleEngine`; the kernel mutates the state in place and writes one
row per alarm transition into preallocated output arrays. The column constants below are module
globals and therefore frozen at compile time, which is what we want for layout constants; every
tunable value is passed in ``params``.

Layout (chosen for speed, measured in benchmarks/bench_rules.py): one row per tag in each of
``params``, ``st_i`` and ``st_f`` (a sample touches one tag, so its data sits in a few cache
lines), indexed as ``a[k, col]`` (no row views: a view costs a reference-count update per
sample). Helpers are inlined into the kernel at numba-IR level.

Ring buffer: a tag with ``roc`` or ``trend`` owns one region of ``buf`` (rows ``(ts, value)``,
float64; integer milliseconds are exact in float64 up to 2**53) holding its recent valid
samples. Positions are sequence numbers: ``S_HEAD`` counts the samples ever pushed, ``S_ROC_SEQ``
and ``S_TR_SEQ`` are the oldest sample each window still uses, and sample ``s`` lives at row
``S_RING_OFF + (s & (S_RING_CAP - 1))`` (capacities are powers of two).

Invariants the caller guarantees:
- ``params``, ``st_i``, ``st_f`` have one row per tag; ``params[k, P_HAS] == 0`` means the tag has
  no checks and its samples are skipped at the cost of one load.
- ``out_i``/``out_f`` have at least ``MAX_EVENTS`` rows.
The kernel never overflows a ring or the output: before touching a sample's state it checks for
room and, when there is none, returns early; the caller grows the ring (:func:`move_rings`) or
the output and calls again from that sample.
"""

from __future__ import annotations

import math

from numba import njit

__all__ = [
    "EV_ACK",
    "EV_CLEAR",
    "EV_DEESCALATE",
    "EV_ESCALATE",
    "EV_RAISE",
    "EV_RETURN",
    "KINDS",
    "MAX_EVENTS",
    "N_PARAMS",
    "N_STATE_F",
    "N_STATE_I",
    "REASONS",
    "evaluate_batch",
    "move_rings",
]

KINDS = ("fault", "high", "low", "roc", "trend_high", "trend_low", "stuck")
K_FAULT, K_HIGH, K_LOW, K_ROC, K_TRH, K_TRL, K_STUCK = range(7)
EV_RAISE, EV_ESCALATE, EV_DEESCALATE, EV_CLEAR, EV_RETURN, EV_ACK = range(6)
REASONS = ("quality", "nan", "range")
MAX_EVENTS = 7  # the most one sample can emit (one per kind)

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
S_TR_EVICT = 18
S_RING_OFF, S_RING_CAP = 19, 20  # capacity 0 = no ring
S_HEAD, S_ROC_SEQ, S_TR_SEQ = 21, 22, 23
N_STATE_I = 24

# float64 state columns
F_RUN_V, F_TR_ORIGIN_V, F_SN, F_SX, F_SY, F_SXX, F_SXY, F_TR_ORIGIN_T = range(8)
N_STATE_F = 8


@njit(cache=True, inline="always")
def _emit(out_i, out_f, n, i, kind, ev, level, extra):  # type: ignore[no-untyped-def]
    out_i[n, 0] = i
    out_i[n, 1] = kind
    out_i[n, 2] = ev
    out_i[n, 3] = level
    out_f[n] = extra
    return n + 1


@njit(cache=True, inline="always")
def _target(v, c, lim1, lim2, db1, db2, s):  # type: ignore[no-untyped-def]
    """Target level of a graded alarm; ``s`` = 1 for high, -1 for low (mirrors the limits)."""
    x = s * v
    if not math.isnan(lim2) and (x >= s * lim2 or (c == 2 and x >= s * lim2 - db2)):
        return 2
    if not math.isnan(lim1) and (x >= s * lim1 or (c >= 1 and x >= s * lim1 - db1)):
        return 1
    return 0


@njit(cache=True, inline="always")
def _graded(params, st, k, j, i, t, v, out_i, out_f, n):  # type: ignore[no-untyped-def]
    """Update the high (j=0) or low (j=1) alarm of tag ``k`` at valid sample ``i``."""
    lim1 = params[k, P_HIGH + 2 * j]
    lim2 = params[k, P_HH + 2 * j]
    if math.isnan(lim1) and math.isnan(lim2):
        return n
    db1 = params[k, P_DB_H + 2 * j]
    db2 = params[k, P_DB_HH + 2 * j]
    s = 1.0 - 2.0 * j
    c = st[k, S_LVL + j]
    tgt = _target(v, c, lim1, lim2, db1, db2, s)
    if tgt == c:
        st[k, S_TDIR + j] = 0
        return n
    d = 1 if tgt > c else -1
    if st[k, S_TDIR + j] != d:
        st[k, S_TDIR + j] = d
        st[k, S_TSTART + j] = t
    delay = params[k, P_ON_MS] if d == 1 else params[k, P_OFF_MS]
    if float(t - st[k, S_TSTART + j]) < delay:
        return n
    kind = K_HIGH + j
    st[k, S_TDIR + j] = 0
    st[k, S_LVL + j] = tgt
    if c == 0:
        st[k, S_UNACK + j] = 1
        return _emit(out_i, out_f, n, i, kind, EV_RAISE, tgt, lim1 if tgt == 1 else lim2)
    if tgt > c:
        st[k, S_UNACK + j] = 1
        return _emit(out_i, out_f, n, i, kind, EV_ESCALATE, tgt, lim2)
    if tgt > 0:
        return _emit(out_i, out_f, n, i, kind, EV_DEESCALATE, tgt, math.nan)
    if params[k, P_LATCH] == 1.0 and st[k, S_UNACK + j] == 1:
        return _emit(out_i, out_f, n, i, kind, EV_RETURN, 0, math.nan)
    st[k, S_UNACK + j] = 0
    return _emit(out_i, out_f, n, i, kind, EV_CLEAR, 0, math.nan)


@njit(cache=True, inline="always")
def _trend_add(sf, k, t, v, sign):  # type: ignore[no-untyped-def]
    x = (t - sf[k, F_TR_ORIGIN_T]) / 1000.0
    y = v - sf[k, F_TR_ORIGIN_V]
    sf[k, F_SN] += sign
    sf[k, F_SX] += sign * x
    sf[k, F_SY] += sign * y
    sf[k, F_SXX] += sign * x * x
    sf[k, F_SXY] += sign * x * y


@njit(cache=True, inline="always")
def _trend_rebase(st, sf, buf, k, off, mask, head):  # type: ignore[no-untyped-def]
    """Recompute the running sums from the window with its oldest sample as origin."""
    first = st[k, S_TR_SEQ]
    o_t = buf[off + (first & mask), 0]
    o_v = buf[off + (first & mask), 1]
    sx = sy = sxx = sxy = 0.0
    for q in range(first, head):
        pos = off + (q & mask)
        x = (buf[pos, 0] - o_t) / 1000.0
        y = buf[pos, 1] - o_v
        sx += x
        sy += y
        sxx += x * x
        sxy += x * y
    st[k, S_TR_EVICT] = 0
    sf[k, F_TR_ORIGIN_T] = o_t
    sf[k, F_TR_ORIGIN_V] = o_v
    sf[k, F_SN] = float(head - first)
    sf[k, F_SX] = sx
    sf[k, F_SY] = sy
    sf[k, F_SXX] = sxx
    sf[k, F_SXY] = sxy


@njit(cache=True, inline="always")
def _trend(params, st, sf, buf, k, off, mask, head, i, tf, out_i, out_f, n):  # type: ignore[no-untyped-def]
    """Trend alarms after the sample at ``head - 1`` was pushed (and the window evicted)."""
    first = st[k, S_TR_SEQ]
    cnt = head - first
    if float(cnt) < params[k, P_TR_MIN] or buf[off + (first & mask), 0] == tf:
        return n
    # sums are exact for grid-like data (small integers, whole ms), so the slope's sign is too
    sn, sx, sy = sf[k, F_SN], sf[k, F_SX], sf[k, F_SY]
    den = sn * sf[k, F_SXX] - sx * sx
    if not den > 0.0:
        return n  # only reachable through rounding when the spread is far below 1 ms
    b = (sn * sf[k, F_SXY] - sx * sy) / den
    xt = (tf - sf[k, F_TR_ORIGIN_T]) / 1000.0
    a = (sy + b * (sn * xt - sx)) / sn + sf[k, F_TR_ORIGIN_V]
    pred = a + b * params[k, P_TR_H_S]
    for j in range(2):
        lim = params[k, P_HIGH + 2 * j]
        if math.isnan(lim):
            lim = params[k, P_HH + 2 * j]
        if math.isnan(lim):
            continue
        if j == 0:
            active = st[k, S_LVL] == 0 and b > 0.0 and pred >= lim
        else:
            active = st[k, S_LVL + 1] == 0 and b < 0.0 and pred <= lim
        act = 1 if active else 0
        if act == st[k, S_TRH + j]:
            continue
        st[k, S_TRH + j] = act
        if act == 1:
            eta = max((lim - a) / b, 0.0)
            n = _emit(out_i, out_f, n, i, K_TRH + j, EV_RAISE, 1, eta)
        else:
            n = _emit(out_i, out_f, n, i, K_TRH + j, EV_CLEAR, 0, math.nan)
    return n


@njit(cache=True, inline="always")
def _windows(params, st, sf, buf, k, has_roc, has_tr, i, t, v, out_i, out_f, n):  # type: ignore[no-untyped-def]
    """Evict, push the valid sample ``(t, v)``, then the roc and trend checks (in that order)."""
    off = st[k, S_RING_OFF]
    mask = st[k, S_RING_CAP] - 1
    head = st[k, S_HEAD]
    tf = float(t)
    if has_roc:  # reference: the earliest sample with ts >= t - window
        w = params[k, P_ROC_W_MS]
        q = st[k, S_ROC_SEQ]
        while q < head and tf - buf[off + (q & mask), 0] > w:
            q += 1
        st[k, S_ROC_SEQ] = q
    if has_tr:  # window: t - window < ts <= t
        w = params[k, P_TR_W_MS]
        q = st[k, S_TR_SEQ]
        while q < head:
            pos = off + (q & mask)
            if tf - buf[pos, 0] < w:
                break
            _trend_add(sf, k, buf[pos, 0], buf[pos, 1], -1.0)
            q += 1
            st[k, S_TR_EVICT] += 1
        st[k, S_TR_SEQ] = q
    pos = off + (head & mask)
    buf[pos, 0] = tf
    buf[pos, 1] = v
    head += 1
    st[k, S_HEAD] = head
    if has_roc:
        ref = off + (st[k, S_ROC_SEQ] & mask)
        t_ref = buf[ref, 0]
        if t_ref != tf:
            rate = (v - buf[ref, 1]) / ((tf - t_ref) / 60000.0)
            active = 1 if abs(rate) >= params[k, P_ROC_LIM] else 0
            if active != st[k, S_ROC]:
                st[k, S_ROC] = active
                if active == 1:
                    n = _emit(out_i, out_f, n, i, K_ROC, EV_RAISE, 1, rate)
                else:
                    n = _emit(out_i, out_f, n, i, K_ROC, EV_CLEAR, 0, math.nan)
    if has_tr:
        cnt = head - st[k, S_TR_SEQ]
        if cnt == 1 or st[k, S_TR_EVICT] >= cnt:
            _trend_rebase(st, sf, buf, k, off, mask, head)  # bounds float drift, amortised O(1)
        else:
            _trend_add(sf, k, tf, v, 1.0)
        n = _trend(params, st, sf, buf, k, off, mask, head, i, tf, out_i, out_f, n)
    return n


@njit(cache=True, inline="always")
def _stuck(params, st, sf, k, i, t, v, out_i, out_f, n):  # type: ignore[no-untyped-def]
    if st[k, S_HAS_RUN] == 0 or abs(v - sf[k, F_RUN_V]) > params[k, P_STUCK_BAND]:
        st[k, S_HAS_RUN] = 1
        st[k, S_RUN_TS] = t
        sf[k, F_RUN_V] = v
        if st[k, S_STUCK] == 1:
            st[k, S_STUCK] = 0
            n = _emit(out_i, out_f, n, i, K_STUCK, EV_CLEAR, 0, math.nan)
    if st[k, S_STUCK] == 0 and float(t - st[k, S_RUN_TS]) >= params[k, P_STUCK_MS]:
        st[k, S_STUCK] = 1
        n = _emit(out_i, out_f, n, i, K_STUCK, EV_RAISE, 1, math.nan)
    return n


@njit(cache=True, inline="always")
def _ring_oldest(params, st, k):  # type: ignore[no-untyped-def]
    """Sequence number of the oldest sample tag ``k``'s ring still holds."""
    lo = st[k, S_HEAD]
    if not math.isnan(params[k, P_ROC_LIM]):
        lo = min(lo, st[k, S_ROC_SEQ])
    if not math.isnan(params[k, P_TR_W_MS]):
        lo = min(lo, st[k, S_TR_SEQ])
    return lo


@njit(cache=True)
def evaluate_batch(first, n0, tag, ts, value, quality, params, st, sf, buf, out_i, out_f):  # type: ignore[no-untyped-def]
    """Process samples ``first..`` in input order; returns ``(events written, stop index)``.

    Event rows ``n0..``: ``out_i[e] = (sample index, kind, event, level)``, ``out_f[e]`` = the
    extra value (limit, reason index, rate_per_min, eta_s; NaN when none). A stop index below
    ``len(tag)`` means that sample was not touched: the output has fewer than ``MAX_EVENTS`` free
    rows, or its tag's ring is full; make room and call again from there. A sample whose
    timestamp is earlier than its tag's previous one is processed at the previous timestamp and
    counted in ``S_CLAMPED`` (windows and timers must not run backwards).
    """
    n = n0
    room = out_f.shape[0] - MAX_EVENTS
    for i in range(first, tag.shape[0]):
        k = tag[i]
        if params[k, P_HAS] == 0.0:
            continue
        if n > room:
            return n, i
        has_ring = st[k, S_RING_CAP] > 0
        if has_ring and st[k, S_HEAD] - _ring_oldest(params, st, k) >= st[k, S_RING_CAP]:
            return n, i
        t = ts[i]
        if st[k, S_HAS_LAST] == 1 and t < st[k, S_LAST_TS]:
            t = st[k, S_LAST_TS]
            st[k, S_CLAMPED] += 1
        st[k, S_LAST_TS] = t
        st[k, S_HAS_LAST] = 1
        v = value[i]
        reason = -1
        if quality[i] != 0:
            reason = 0
        elif not math.isfinite(v):
            reason = 1
        elif v < params[k, P_RMIN] or v > params[k, P_RMAX]:
            reason = 2
        if reason >= 0:
            st[k, S_TDIR] = 0
            st[k, S_TDIR + 1] = 0
            if st[k, S_FAULT] == 0:
                st[k, S_FAULT] = 1
                n = _emit(out_i, out_f, n, i, K_FAULT, EV_RAISE, 1, float(reason))
            continue
        if st[k, S_FAULT] == 1:
            st[k, S_FAULT] = 0
            n = _emit(out_i, out_f, n, i, K_FAULT, EV_CLEAR, 0, math.nan)
        n = _graded(params, st, k, 0, i, t, v, out_i, out_f, n)
        n = _graded(params, st, k, 1, i, t, v, out_i, out_f, n)
        if has_ring:
            has_roc = not math.isnan(params[k, P_ROC_LIM])
            has_tr = not math.isnan(params[k, P_TR_W_MS])
            n = _windows(params, st, sf, buf, k, has_roc, has_tr, i, t, v, out_i, out_f, n)
        if not math.isnan(params[k, P_STUCK_MS]):
            n = _stuck(params, st, sf, k, i, t, v, out_i, out_f, n)
    return n, tag.shape[0]


@njit(cache=True)
def move_rings(params, st, src, dst, tags, new_off, new_cap):  # type: ignore[no-untyped-def]
    """Move the rings of ``tags`` to ``dst`` at ``new_off`` with ``new_cap`` rows (powers of two,
    each at least the ring's contents). ``dst`` may be ``src`` when the regions do not overlap."""
    for j in range(tags.shape[0]):
        k = tags[j]
        off, mask = st[k, S_RING_OFF], st[k, S_RING_CAP] - 1
        noff, nmask = new_off[j], new_cap[j] - 1
        for q in range(_ring_oldest(params, st, k), st[k, S_HEAD]):
            dst[noff + (q & nmask), 0] = src[off + (q & mask), 0]
            dst[noff + (q & nmask), 1] = src[off + (q & mask), 1]
        st[k, S_RING_OFF] = noff
        st[k, S_RING_CAP] = new_cap[j]
