"""numba kernels of the statistics windows (the only module of :mod:`agent.shaping` that
imports numba; its wrapper :class:`agent.shaping.stats.StatsWindows` validates input).

State per tag ``t``: ``st_i[t] = (window start ms, samples, bad samples)``, ``st_f[t] = (min,
max, sum, last)`` over the good samples. ``window[t]`` is the tag's window in ms (0: the tag
is not summarised). A window is ``[start, start + w)`` with ``start = ts - ts mod w``: aligned to
the wall clock (epoch), so every gateway's 60 s windows start on the minute. A row is emitted
when a tag's sample falls in another window than the open one, or by :func:`close_due` once
the window ended. Out rows: ``out_t`` tag, ``out_i = (start, count, bad)``, ``out_f = (min, max,
mean, last)`` (NaN when no sample was good). Tests: tests/agent/shaping/test_stats.py runs the
kernels against a naive twin, also with NUMBA_DISABLE_JIT=1.
"""

from __future__ import annotations

import math

from numba import njit

__all__ = ["accumulate", "close_due"]


@njit(cache=True)
def _emit(t, st_i, st_f, out_t, out_i, out_f, k):  # type: ignore[no-untyped-def]
    out_t[k] = t
    out_i[k, 0] = st_i[t, 0]
    out_i[k, 1] = st_i[t, 1]
    out_i[k, 2] = st_i[t, 2]
    good = st_i[t, 1] - st_i[t, 2]
    if good > 0:
        out_f[k, 0] = st_f[t, 0]
        out_f[k, 1] = st_f[t, 1]
        out_f[k, 2] = st_f[t, 2] / good
        out_f[k, 3] = st_f[t, 3]
    else:
        out_f[k, 0] = math.nan
        out_f[k, 1] = math.nan
        out_f[k, 2] = math.nan
        out_f[k, 3] = math.nan
    st_i[t, 1] = 0
    st_i[t, 2] = 0


@njit(cache=True)
def accumulate(tag, ts, value, quality, window, st_i, st_f, out_t, out_i, out_f):  # type: ignore[no-untyped-def]
    """Add samples in order; returns the number of rows written to ``out_*`` (≤ len(tag))."""
    k = 0
    for j in range(len(tag)):
        t = tag[j]
        w = window[t]
        if w <= 0:
            continue
        s = ts[j] - ts[j] % w
        if st_i[t, 1] > 0 and s != st_i[t, 0]:
            _emit(t, st_i, st_f, out_t, out_i, out_f, k)
            k += 1
        if st_i[t, 1] == 0:
            st_i[t, 0] = s
            st_f[t, 0] = math.inf
            st_f[t, 1] = -math.inf
            st_f[t, 2] = 0.0
            st_f[t, 3] = math.nan
        st_i[t, 1] += 1
        v = value[j]
        if quality[j] != 0 or not math.isfinite(v):
            st_i[t, 2] += 1
        else:
            st_f[t, 0] = min(st_f[t, 0], v)
            st_f[t, 1] = max(st_f[t, 1], v)
            st_f[t, 2] += v
            st_f[t, 3] = v
    return k


@njit(cache=True)
def close_due(now_ms, window, st_i, st_f, out_t, out_i, out_f):  # type: ignore[no-untyped-def]
    """Emit every open window that ended at or before ``now_ms``; returns rows written."""
    k = 0
    for t in range(len(window)):
        if st_i[t, 1] > 0 and st_i[t, 0] + window[t] <= now_ms:
            _emit(t, st_i, st_f, out_t, out_i, out_f, k)
            k += 1
    return k
