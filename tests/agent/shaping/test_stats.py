"""Statistics windows: the numba kernels (and their pure-Python form) match a naive twin."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.codec_v2 import StatRow, decode_stats, stats_body
from agent.shaping import stats_kernel
from agent.shaping.stats import StatsWindows
from tests.agent.shaping.naive import NaiveStats

W = [60_000, 0, 1_000, 300_000]  # tag 1 is not summarised
NAMES = ["TT-101", "GT-101", "PT-101", "LT-101"]

sample = st.tuples(
    st.integers(0, 3),
    st.integers(0, 700_000),
    st.one_of(st.floats(-1e6, 1e6), st.just(math.nan), st.just(math.inf)),
    st.sampled_from([0, 0, 0, 1, 4]),
)


def _rows(by_window: dict[int, list[StatRow]]) -> list[tuple[object, ...]]:
    """Rows in emission order (windows of one length are emitted in order; merge by index)."""
    rows = [r for rs in by_window.values() for r in rs]
    return [(NAMES.index(r.tag), *r[1:]) for r in rows]


def _same(got: list[tuple[object, ...]], want: list[tuple[object, ...]]) -> bool:
    def key(r: tuple[object, ...]) -> tuple[int, int]:
        return (int(r[1]), int(r[0]))  # type: ignore[call-overload]

    got, want = sorted(got, key=key), sorted(want, key=key)
    if len(got) != len(want):
        return False
    for g, w in zip(got, want, strict=True):
        for a, b in zip(g, w, strict=True):
            if isinstance(b, float) and isinstance(a, float):
                if not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9):
                    return False
            elif a != b:
                return False
    return True


@pytest.mark.parametrize("jit", [True, False], ids=["numba", "python"])
@settings(max_examples=60, deadline=None)
@given(polls=st.lists(st.lists(sample, max_size=10), max_size=6), now=st.integers(0, 10**6))
def test_the_kernels_match_the_naive_twin(
    jit: bool, polls: list[list[tuple[int, int, float, int]]], now: int
) -> None:
    win = StatsWindows(NAMES, np.array(W, dtype=np.int64))
    if not jit:  # the kernels' Python form (what NUMBA_DISABLE_JIT=1 runs)
        win._k = type(  # type: ignore[assignment]
            "py",
            (),
            {
                "accumulate": staticmethod(stats_kernel.accumulate.py_func),
                "close_due": staticmethod(stats_kernel.close_due.py_func),
            },
        )
    twin = NaiveStats(W)
    for poll in polls:
        cols = (
            np.array([s[0] for s in poll], dtype=np.int32),
            np.array([s[1] for s in poll], dtype=np.int64),
            np.array([s[2] for s in poll], dtype=np.float64),
            np.array([s[3] for s in poll], dtype=np.uint8),
        )
        got_poll, want_poll = _rows(win.add(*cols)), twin.add(poll)
        assert _same(got_poll, want_poll), (got_poll, want_poll)
    got, want = _rows(win.due(now)), twin.due(now)
    assert _same(got, want), (got, want)


def test_windows_align_to_the_wall_clock_and_close_when_they_end() -> None:
    win = StatsWindows(["TT-101"], np.array([60_000], dtype=np.int64))
    t0 = 1_764_300_000_000  # a whole minute
    tag = np.zeros(3, dtype=np.int32)
    ts = np.array([t0 + 1_000, t0 + 2_000, t0 + 3_000], dtype=np.int64)
    q = np.array([0, 1, 0], dtype=np.uint8)
    assert win.add(tag, ts, np.array([20.0, 0.0, 22.0]), q) == {}
    assert win.due(t0 + 59_999) == {}
    (row,) = win.due(t0 + 60_000)[60_000]
    assert row == StatRow("TT-101", t0, 3, 20.0, 22.0, 21.0, 22.0, 1)
    body = stats_body(60_000, [row])
    assert body == (
        b'{"t0":1764300000000,"window_ms":60000,' b'"stats":[["TT-101",0,3,20.0,22.0,21.0,22.0,1]]}'
    )
    assert decode_stats(body) == (60_000, [row])


def test_a_window_with_only_bad_samples_has_null_statistics_and_counts_them() -> None:
    win = StatsWindows(["A"], np.array([1_000], dtype=np.int64))
    win.add(np.zeros(2, np.int32), np.array([0, 10], np.int64), np.zeros(2), np.ones(2, np.uint8))
    (row,) = win.flush()[1_000]
    assert row == StatRow("A", 0, 2, None, None, None, None, 2)
    assert b'["A",0,2,null,null,null,null,2]' in stats_body(1_000, [row])
