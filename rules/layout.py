"""The kernels' array layout and codes: columns of ``params``, ``st_i`` and ``st_f``, the kinds,
transitions and fault reasons (no numba: the engine and the native-module loader use these
without loading the JIT; :mod:`rules.kernels` compiles against them).

Layout (chosen for speed, measured in benchmarks/bench_rules.py): one row per tag in each of
``params``, ``st_i`` and ``st_f``, indexed as ``a[k, col]``. See :mod:`rules.kernels` for the
ring buffer and the invariants the caller guarantees.
"""

from __future__ import annotations

__all__ = [
    "EV_ACK",
    "EV_CLEAR",
    "EV_DEESCALATE",
    "EV_ESCALATE",
    "EV_RAISE",
    "EV_RETURN",
    "F_RUN_V",
    "F_SN",
    "F_SX",
    "F_SXX",
    "F_SXY",
    "F_SY",
    "F_TR_ORIGIN_T",
    "F_TR_ORIGIN_V",
    "KINDS",
    "K_FAULT",
    "K_HIGH",
    "K_LOW",
    "K_ROC",
    "K_STUCK",
    "K_TRH",
    "K_TRL",
    "MAX_EVENTS",
    "N_PARAMS",
    "N_STATE_F",
    "N_STATE_I",
    "PREFETCH_AHEAD",
    "P_DB_H",
    "P_DB_HH",
    "P_DB_L",
    "P_DB_LL",
    "P_HAS",
    "P_HH",
    "P_HIGH",
    "P_LATCH",
    "P_LL",
    "P_LOW",
    "P_OFF_MS",
    "P_ON_MS",
    "P_RMAX",
    "P_RMIN",
    "P_ROC_LIM",
    "P_ROC_W_MS",
    "P_STUCK_BAND",
    "P_STUCK_MS",
    "P_TR_H_S",
    "P_TR_MIN",
    "P_TR_W_MS",
    "REASONS",
    "S_CLAMPED",
    "S_FAULT",
    "S_HAS_LAST",
    "S_HAS_RUN",
    "S_HEAD",
    "S_LAST_TS",
    "S_LVL",
    "S_RING_CAP",
    "S_RING_OFF",
    "S_ROC",
    "S_ROC_SEQ",
    "S_RUN_TS",
    "S_STUCK",
    "S_TDIR",
    "S_TRH",
    "S_TRL",
    "S_TR_EVICT",
    "S_TR_SEQ",
    "S_TSTART",
    "S_UNACK",
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


PREFETCH_AHEAD = 8  # samples: how far ahead the kernel prefetches a tag's oldest ring row
