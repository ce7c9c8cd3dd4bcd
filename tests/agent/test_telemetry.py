"""Report-by-exception and batching (sans-I/O), checked against a slow, obvious twin."""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.codec import decode_telemetry
from agent.telemetry import ExceptionFilter, PointTuple, TelemetryBatcher


def arrays(
    rows: list[tuple[int, int, float, int]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    tag = np.array([r[0] for r in rows], dtype=np.int32)
    ts = np.array([r[1] for r in rows], dtype=np.int64)
    value = np.array([r[2] for r in rows], dtype=np.float64)
    quality = np.array([r[3] for r in rows], dtype=np.uint8)
    return tag, ts, value, quality


def naive_rbe(
    rows: list[tuple[int, int, float, int]], deadband: list[float], integrity_ms: int
) -> list[bool]:
    last: dict[int, tuple[int, float, int]] = {}
    out = []
    for tag, ts, value, quality in rows:
        prev = last.get(tag)
        if prev is None:
            send = True
        else:
            p_ts, p_value, p_quality = prev
            moved = quality == 0 and (
                math.isnan(value) or math.isnan(p_value) or abs(value - p_value) > deadband[tag]
            )
            send = quality != p_quality or ts - p_ts >= integrity_ms or moved
        if send:
            last[tag] = (ts, value, quality)
        out.append(send)
    return out


def test_a_flat_value_is_sent_once_then_again_after_the_integrity_period() -> None:
    f = ExceptionFilter(np.array([0.5]), integrity_ms=10_000)
    rows = [(0, t * 1000, 20.0 + 0.1 * (t % 2), 0) for t in range(25)]
    sent = f.select(*arrays(rows))
    assert [i for i, s in enumerate(sent) if s] == [0, 10, 20]
    assert f.suppressed == 22


def test_a_move_beyond_the_deadband_or_a_quality_change_is_sent_at_once() -> None:
    f = ExceptionFilter(np.array([0.5]), integrity_ms=60_000)
    rows = [(0, 0, 20.0, 0), (0, 1, 20.4, 0), (0, 2, 20.6, 0), (0, 3, math.nan, 1), (0, 4, 20.6, 0)]
    assert f.select(*arrays(rows)).tolist() == [True, False, True, True, True]


rows_strategy = st.lists(
    st.tuples(
        st.integers(0, 3),
        st.integers(0, 5_000),
        st.one_of(st.floats(-5, 5, allow_nan=False), st.just(math.nan)),
        st.sampled_from([0, 0, 0, 1, 4]),
    ),
    max_size=80,
).map(lambda rows: sorted(rows, key=lambda r: r[1]))


@settings(max_examples=300, deadline=None)
@given(rows=rows_strategy, split=st.integers(0, 80))
def test_the_filter_matches_its_naive_twin_however_polls_are_split(
    rows: list[tuple[int, int, float, int]], split: int
) -> None:
    deadband = [0.0, 0.5, 1.0, 2.0]
    f = ExceptionFilter(np.array(deadband), integrity_ms=1_000)
    got = f.select(*arrays(rows[:split])).tolist() + f.select(*arrays(rows[split:])).tolist()
    assert got == naive_rbe(rows, deadband, 1_000)


def test_invalid_deadbands_are_refused() -> None:
    with pytest.raises(ValueError, match="deadbands"):
        ExceptionFilter(np.array([math.nan]), integrity_ms=1)


point_strategy = st.tuples(
    st.text(min_size=1, max_size=12),
    st.integers(0, 2**45),
    st.one_of(st.none(), st.floats(-1e9, 1e9, allow_nan=False)),
    st.sampled_from([None, "bad_comm", "stale"]),
)


@settings(max_examples=200, deadline=None)
@given(
    polls=st.lists(st.lists(point_strategy, max_size=30), max_size=6),
    max_points=st.integers(1, 40),
    max_bytes=st.integers(64, 2000),
)
def test_batches_respect_both_limits_and_keep_every_point_in_order(
    polls: list[list[PointTuple]], max_points: int, max_bytes: int
) -> None:
    b = TelemetryBatcher(max_points=max_points, max_bytes=max_bytes, linger_ms=0)
    bodies: list[bytes] = []
    for i, poll in enumerate(polls):
        bodies += b.add(poll, now_ms=i)
    assert b.pending == 0
    got = [p for body in bodies for p in decode_telemetry(body)]
    want = [(t, ts, v, q) for t, ts, v, q in (p for poll in polls for p in poll)]
    assert [tuple(p) for p in got] == want
    for body in bodies:
        n = len(msgspec.json.decode(body)["points"])
        assert 1 <= n <= max_points
        assert len(body) <= max_bytes or n == 1


def test_lingering_shares_one_record_between_polls_until_it_is_due() -> None:
    b = TelemetryBatcher(max_points=100, max_bytes=65536, linger_ms=1000)
    assert b.add([("A", 0, 1.0, None)], now_ms=0) == []
    assert b.add([("B", 500, 2.0, None)], now_ms=500) == []
    assert b.due(999) == []
    [body] = b.due(1000)
    assert [p.tag for p in decode_telemetry(body)] == ["A", "B"]
    assert b.flush() == []
