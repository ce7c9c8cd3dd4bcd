"""The numba kernels: one pass over a batch of samples, all tags at once (design/RULES.md).

Everything here is boring array code. Parameters, state and the ring buffer are numpy arrays
owned by :class:`rules.engine.RuleEngine`; the kernel mutates the state in place and writes one
row per alarm transition into preallocated output arrays. The column constants come from
:mod:`rules.layout` as module globals and are therefore frozen at compile time, which is what we
want for layout constants; every tunable value is passed in ``params``.

These functions run either as numba's JIT dispatchers (this module, cached in
``NUMBA_CACHE_DIR``) or compiled ahead of time into a native module without numba
(:mod:`rules.native`, built by ``safeedge warm-cache``); :func:`rules.native.rule_kernels`
chooses.

Layout (chosen for speed, measured in benchmarks/bench_rules.py): one row per tag in each of
``params``, ``st_i`` and ``st_f`` (a sample touches one tag, so its data sits in a few cache
lines), indexed as ``a[k, col]`` (no row views: a view costs a reference-count update per
sample). The per-sample kernel is one flat function (see its docstring).

Ring buffer: a tag with ``roc`` or ``trend`` owns one region of ``buf`` (rows ``(ts, value)``,
float64; integer milliseconds are exact in float64 up to 2**53) holding its recent valid
samples. Positions are sequence numbers: ``S_HEAD`` counts the samples ever pushed, ``S_ROC_SEQ``
and ``S_TR_SEQ`` are the oldest sample each window still uses, and sample ``s`` lives at row
``S_RING_OFF + (s & (S_RING_CAP - 1))`` (capacities are powers of two). The trend's running
sums (``F_SN`` .. ``F_SXY``) take time as milliseconds since ``F_TR_ORIGIN_T``.

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
from typing import Any

import numpy as np
from llvmlite import ir  # type: ignore[import-untyped]
from numba import config, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from rules.layout import (
    EV_CLEAR,
    EV_DEESCALATE,
    EV_ESCALATE,
    EV_RAISE,
    EV_RETURN,
    F_RUN_V,
    F_SN,
    F_SX,
    F_SXX,
    F_SXY,
    F_SY,
    F_TR_ORIGIN_T,
    F_TR_ORIGIN_V,
    K_FAULT,
    K_HIGH,
    K_ROC,
    K_STUCK,
    K_TRH,
    MAX_EVENTS,
    P_DB_H,
    P_DB_HH,
    P_HAS,
    P_HH,
    P_HIGH,
    P_LATCH,
    P_OFF_MS,
    P_ON_MS,
    P_RMAX,
    P_RMIN,
    P_ROC_LIM,
    P_ROC_W_MS,
    P_STUCK_BAND,
    P_STUCK_MS,
    P_TR_H_S,
    P_TR_MIN,
    P_TR_W_MS,
    PREFETCH_AHEAD,
    S_CLAMPED,
    S_FAULT,
    S_HAS_LAST,
    S_HAS_RUN,
    S_HEAD,
    S_LAST_TS,
    S_LVL,
    S_RING_CAP,
    S_RING_OFF,
    S_ROC,
    S_ROC_SEQ,
    S_RUN_TS,
    S_STUCK,
    S_TDIR,
    S_TR_EVICT,
    S_TR_SEQ,
    S_TRH,
    S_TSTART,
    S_UNACK,
)

__all__ = ["evaluate_batch", "move_rings"]


def _prefetch_row_py(a, row):  # type: ignore[no-untyped-def]
    """Without the JIT a prefetch is a no-op."""


@intrinsic
def _prefetch_row_jit(typingctx, a, row):  # type: ignore[no-untyped-def]
    """Hint the CPU to load row ``row`` of the 2-d array ``a`` into cache (no fault, no effect
    on results): a ring's oldest row was last touched a whole window ago, so it is a miss."""
    sig = types.none(a, row)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        aryty, rowty = signature.args
        ary = context.make_array(aryty)(context, builder, args[0])
        idx = context.cast(builder, args[1], rowty, types.intp)
        ptr = cgutils.get_item_pointer(  # type: ignore[no-untyped-call]
            context, builder, aryty, ary, [idx, context.get_constant(types.intp, 0)]
        )
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(  # type: ignore[no-untyped-call]
            builder.module, fnty, "llvm.prefetch.p0"
        )
        builder.call(fn, [ptr, i32(0), i32(3), i32(1)])  # read, keep in all levels, data
        return context.get_dummy_value()

    return sig, codegen


_prefetch_row: Any = (
    _prefetch_row_py if config.DISABLE_JIT else _prefetch_row_jit  # type: ignore[attr-defined]
)


@njit(cache=True)
def evaluate_batch(first, n0, tag, ts, value, quality, params, st, sf, buf, out_i, out_f):  # type: ignore[no-untyped-def]
    """Process samples ``first..`` in input order; returns ``(events written, stop index)``.

    Event rows ``n0..``: ``out_i[e] = (sample index, kind, event, level)``, ``out_f[e]`` = the
    extra value (limit, reason index, rate_per_min, eta_s; NaN when none). A stop index below
    ``len(tag)`` means that sample was not touched: the output has fewer than ``MAX_EVENTS`` free
    rows, or its tag's ring is full; make room and call again from there. A sample whose
    timestamp is earlier than its tag's previous one is processed at the previous timestamp and
    counted in ``S_CLAMPED`` (windows and timers must not run backwards).

    One flat function on purpose: numba's inlining of helpers that take arrays leaves
    reference-count updates (atomic, out of line) on every sample; scalars in locals do not.
    """
    n = n0
    room = out_f.shape[0] - MAX_EVENTS
    n_in = tag.shape[0]
    for p in range(first, n_in):
        if p + PREFETCH_AHEAD < n_in:
            k2 = np.uint64(tag[np.uint64(p + PREFETCH_AHEAD)])
            cap2 = st[k2, S_RING_CAP]
            if cap2 > 0:  # the rows its window checks will read first (each one a miss)
                off2 = st[k2, S_RING_OFF]
                if not math.isnan(params[k2, P_ROC_LIM]):
                    _prefetch_row(buf, np.uint64(off2 + (st[k2, S_ROC_SEQ] & (cap2 - 1))))
                if not math.isnan(params[k2, P_TR_W_MS]):
                    _prefetch_row(buf, np.uint64(off2 + ((st[k2, S_TR_SEQ] + 1) & (cap2 - 1))))
        i = np.uint64(p)  # unsigned indices: numba emits no negative-index wraparound
        k = np.uint64(tag[i])
        if params[k, P_HAS] == 0.0:
            continue
        if n > room:
            return n, p
        cap = st[k, S_RING_CAP]
        has_roc = not math.isnan(params[k, P_ROC_LIM])
        has_tr = not math.isnan(params[k, P_TR_W_MS])
        head = st[k, S_HEAD]
        if cap > 0:  # the oldest sample the ring still holds must leave room for this one
            oldest = head
            if has_roc:
                oldest = min(oldest, st[k, S_ROC_SEQ])
            if has_tr:
                oldest = min(oldest, st[k, S_TR_SEQ])
            if head - oldest >= cap:
                return n, p
        t = ts[i]
        if st[k, S_HAS_LAST] == 1 and t < st[k, S_LAST_TS]:
            t = st[k, S_LAST_TS]
            st[k, S_CLAMPED] += 1
        st[k, S_LAST_TS] = t
        st[k, S_HAS_LAST] = 1
        v = value[i]

        # -- fault ----------------------------------------------------------------------
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
                out_i[n, 0] = i
                out_i[n, 1] = K_FAULT
                out_i[n, 2] = EV_RAISE
                out_i[n, 3] = 1
                out_f[n] = float(reason)
                n += 1
            continue
        if st[k, S_FAULT] == 1:
            st[k, S_FAULT] = 0
            out_i[n, 0] = i
            out_i[n, 1] = K_FAULT
            out_i[n, 2] = EV_CLEAR
            out_i[n, 3] = 0
            out_f[n] = math.nan
            n += 1

        # -- high (j = 0) and low (j = 1); s = -1 mirrors the limits for low -----------------
        for j in range(2):
            lim1 = params[k, P_HIGH + 2 * j]
            lim2 = params[k, P_HH + 2 * j]
            if math.isnan(lim1) and math.isnan(lim2):
                continue
            s = 1.0 - 2.0 * j
            c = st[k, S_LVL + j]
            x = s * v
            if not math.isnan(lim2) and (
                x >= s * lim2 or (c == 2 and x >= s * lim2 - params[k, P_DB_HH + 2 * j])
            ):
                tgt = 2
            elif not math.isnan(lim1) and (
                x >= s * lim1 or (c >= 1 and x >= s * lim1 - params[k, P_DB_H + 2 * j])
            ):
                tgt = 1
            else:
                tgt = 0
            if tgt == c:
                st[k, S_TDIR + j] = 0
                continue
            d = 1 if tgt > c else -1
            if st[k, S_TDIR + j] != d:
                st[k, S_TDIR + j] = d
                st[k, S_TSTART + j] = t
            delay = params[k, P_ON_MS] if d == 1 else params[k, P_OFF_MS]
            if float(t - st[k, S_TSTART + j]) < delay:
                continue
            st[k, S_TDIR + j] = 0
            st[k, S_LVL + j] = tgt
            extra = math.nan
            if c == 0:
                st[k, S_UNACK + j] = 1
                ev = EV_RAISE
                extra = lim1 if tgt == 1 else lim2
            elif tgt > c:
                st[k, S_UNACK + j] = 1
                ev = EV_ESCALATE
                extra = lim2
            elif tgt > 0:
                ev = EV_DEESCALATE
            elif params[k, P_LATCH] == 1.0 and st[k, S_UNACK + j] == 1:
                ev = EV_RETURN
            else:
                st[k, S_UNACK + j] = 0
                ev = EV_CLEAR
            out_i[n, 0] = i
            out_i[n, 1] = K_HIGH + j
            out_i[n, 2] = ev
            out_i[n, 3] = tgt
            out_f[n] = extra
            n += 1

        # -- windows: evict, push (t, v), then roc and trend (in that order) ----------------
        if cap > 0:
            off = st[k, S_RING_OFF]
            mask = cap - 1
            tf = float(t)
            if has_roc:  # reference: the earliest sample with ts >= t - window
                w = params[k, P_ROC_W_MS]
                q = st[k, S_ROC_SEQ]
                while q < head and tf - buf[np.uint64(off + (q & mask)), 0] > w:
                    q += 1
                st[k, S_ROC_SEQ] = q
            if has_tr:  # window: t - window < ts <= t; evicted samples leave the running sums
                w = params[k, P_TR_W_MS]
                q = st[k, S_TR_SEQ]
                q0 = q
                o_t = sf[k, F_TR_ORIGIN_T]
                o_v = sf[k, F_TR_ORIGIN_V]
                sn, sx, sy = sf[k, F_SN], sf[k, F_SX], sf[k, F_SY]
                sxx, sxy = sf[k, F_SXX], sf[k, F_SXY]
                while q < head:
                    pos = np.uint64(off + (q & mask))
                    if tf - buf[pos, 0] < w:
                        break
                    ex = buf[pos, 0] - o_t
                    ey = buf[pos, 1] - o_v
                    sn -= 1.0
                    sx -= ex
                    sy -= ey
                    sxx -= ex * ex
                    sxy -= ex * ey
                    q += 1
                st[k, S_TR_SEQ] = q
                st[k, S_TR_EVICT] += q - q0
            pos = np.uint64(off + (head & mask))
            buf[pos, 0] = tf
            buf[pos, 1] = v
            head += 1
            st[k, S_HEAD] = head
            if has_roc:
                ref = np.uint64(off + (st[k, S_ROC_SEQ] & mask))
                t_ref = buf[ref, 0]
                if t_ref != tf:
                    dv = v - buf[ref, 1]
                    dt = tf - t_ref
                    lim = params[k, P_ROC_LIM]
                    # |rate| >= lim without the two divisions when |rate| is over twice or under
                    # half the limit (that margin dwarfs any rounding; a span near the underflow
                    # range takes the exact path)
                    fast_x = abs(dv) * 60000.0
                    fast_y = lim * dt
                    if fast_y > 1e-300 and (fast_x < 0.5 * fast_y or fast_x > 2.0 * fast_y):
                        active = 1 if fast_x > fast_y else 0
                    else:
                        active = 1 if abs(dv / (dt / 60000.0)) >= lim else 0
                    if active != st[k, S_ROC]:
                        st[k, S_ROC] = active
                        out_i[n, 0] = i
                        out_i[n, 1] = K_ROC
                        out_i[n, 2] = EV_RAISE if active == 1 else EV_CLEAR
                        out_i[n, 3] = active
                        out_f[n] = dv / (dt / 60000.0) if active == 1 else math.nan
                        n += 1
            if has_tr:
                first_q = st[k, S_TR_SEQ]
                cnt = head - first_q
                if cnt == 1 or st[k, S_TR_EVICT] >= cnt:
                    # recompute the sums with the oldest sample as origin: bounds float drift,
                    # amortised O(1)
                    o_t = buf[np.uint64(off + (first_q & mask)), 0]
                    o_v = buf[np.uint64(off + (first_q & mask)), 1]
                    sx = sy = sxx = sxy = 0.0
                    for q in range(first_q, head):
                        pos = np.uint64(off + (q & mask))
                        ex = buf[pos, 0] - o_t
                        ey = buf[pos, 1] - o_v
                        sx += ex
                        sy += ey
                        sxx += ex * ex
                        sxy += ex * ey
                    sn = float(cnt)
                    st[k, S_TR_EVICT] = 0
                    sf[k, F_TR_ORIGIN_T] = o_t
                    sf[k, F_TR_ORIGIN_V] = o_v
                else:
                    ex = tf - o_t
                    ey = v - o_v
                    sn += 1.0
                    sx += ex
                    sy += ey
                    sxx += ex * ex
                    sxy += ex * ey
                sf[k, F_SN] = sn
                sf[k, F_SX] = sx
                sf[k, F_SY] = sy
                sf[k, F_SXX] = sxx
                sf[k, F_SXY] = sxy
                # sums are exact for grid-like data (small integers, whole ms), so the slope's
                # sign is too; den <= 0 is only reachable through rounding when the spread is far
                # below 1 ms
                den = sn * sxx - sx * sx
                if (
                    float(cnt) >= params[k, P_TR_MIN]
                    and buf[np.uint64(off + (first_q & mask)), 0] != tf
                    and den > 0.0
                ):
                    b_ms = (sn * sxy - sx * sy) / den
                    a = (sy + b_ms * (sn * (tf - o_t) - sx)) / sn + o_v
                    b = b_ms * 1000.0  # per second
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
                        out_i[n, 0] = i
                        out_i[n, 1] = K_TRH + j
                        out_i[n, 2] = EV_RAISE if act == 1 else EV_CLEAR
                        out_i[n, 3] = act
                        out_f[n] = max((lim - a) / b, 0.0) if act == 1 else math.nan
                        n += 1

        # -- stuck ------------------------------------------------------------------------
        if not math.isnan(params[k, P_STUCK_MS]):
            if st[k, S_HAS_RUN] == 0 or abs(v - sf[k, F_RUN_V]) > params[k, P_STUCK_BAND]:
                st[k, S_HAS_RUN] = 1
                st[k, S_RUN_TS] = t
                sf[k, F_RUN_V] = v
                if st[k, S_STUCK] == 1:
                    st[k, S_STUCK] = 0
                    out_i[n, 0] = i
                    out_i[n, 1] = K_STUCK
                    out_i[n, 2] = EV_CLEAR
                    out_i[n, 3] = 0
                    out_f[n] = math.nan
                    n += 1
            if st[k, S_STUCK] == 0 and float(t - st[k, S_RUN_TS]) >= params[k, P_STUCK_MS]:
                st[k, S_STUCK] = 1
                out_i[n, 0] = i
                out_i[n, 1] = K_STUCK
                out_i[n, 2] = EV_RAISE
                out_i[n, 3] = 1
                out_f[n] = math.nan
                n += 1
    return n, n_in


@njit(cache=True)
def move_rings(params, st, src, dst, tags, new_off, new_cap):  # type: ignore[no-untyped-def]
    """Move the rings of ``tags`` to ``dst`` at ``new_off`` with ``new_cap`` rows (powers of two,
    each at least the ring's contents). ``dst`` may be ``src`` when the regions do not overlap."""
    for j in range(tags.shape[0]):
        k = tags[j]
        off, mask = st[k, S_RING_OFF], st[k, S_RING_CAP] - 1
        noff, nmask = new_off[j], new_cap[j] - 1
        lo = st[k, S_HEAD]
        if not math.isnan(params[k, P_ROC_LIM]):
            lo = min(lo, st[k, S_ROC_SEQ])
        if not math.isnan(params[k, P_TR_W_MS]):
            lo = min(lo, st[k, S_TR_SEQ])
        for q in range(lo, st[k, S_HEAD]):
            dst[noff + (q & nmask), 0] = src[off + (q & mask), 0]
            dst[noff + (q & nmask), 1] = src[off + (q & mask), 1]
        st[k, S_RING_OFF] = noff
        st[k, S_RING_CAP] = new_cap[j]
