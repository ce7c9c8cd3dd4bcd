"""Telemetry encoded from columns is byte-identical to the encoding from per-point tuples.

OLD is today's :func:`agent.codec.telemetry_body` fed by the pre-issue-9 tuple building and
batcher, kept verbatim in benchmarks/bench_glue.py (the benchmark's baseline); NEW is
:class:`agent.codec.TelemetryEncoder` rows through :class:`agent.telemetry.TelemetryBatcher`.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from agent.codec import TelemetryEncoder, telemetry_body, telemetry_body_from_rows
from agent.telemetry import TelemetryBatcher
from drivers import Quality

Cols = tuple[NDArray[np.int32], NDArray[np.int64], NDArray[np.float64], NDArray[np.uint8]]
QUALITIES = {int(q): q.wire_name for q in Quality if q}


def _bench() -> ModuleType:
    path = Path(__file__).parents[2] / "benchmarks" / "bench_glue.py"
    spec = importlib.util.spec_from_file_location("bench_glue", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_glue", module)
    spec.loader.exec_module(module)
    return module


OLD = _bench()

values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [math.nan, math.inf, -math.inf, -0.0, 0.0, 1e16, 5e-324, 1.7976931348623157e308]
    ),
)
names = st.lists(st.text(min_size=1, max_size=10), min_size=1, max_size=8, unique=True)


@st.composite
def polls(draw: st.DrawFn) -> tuple[list[str], list[Cols]]:
    tag_names = draw(names)
    out: list[Cols] = []
    for _ in range(draw(st.integers(1, 4))):
        rows = draw(
            st.lists(
                st.tuples(
                    st.integers(0, len(tag_names) - 1),
                    st.integers(0, 2**53),
                    values,
                    st.sampled_from([0, 0, 0, 1, 2, 3, 4]),
                ),
                max_size=40,
            )
        )
        out.append(
            (
                np.array([r[0] for r in rows], dtype=np.int32),
                np.array([r[1] for r in rows], dtype=np.int64),
                np.array([r[2] for r in rows], dtype=np.float64),
                np.array([r[3] for r in rows], dtype=np.uint8),
            )
        )
    return tag_names, out


@settings(max_examples=300, deadline=None)
@given(data=polls())
def test_one_body_from_columns_equals_the_body_from_tuples(
    data: tuple[list[str], list[Cols]],
) -> None:
    tag_names, batches = data
    enc = TelemetryEncoder(tag_names, QUALITIES)
    for cols in batches:
        if not len(cols[0]):
            continue
        old = telemetry_body(OLD.old_points(tag_names, *cols))
        assert telemetry_body_from_rows(enc.rows(*cols)) == old


@settings(max_examples=200, deadline=None)
@given(
    data=polls(),
    max_points=st.integers(1, 30),
    max_bytes=st.integers(64, 1500),
    linger_ms=st.sampled_from([0, 1000]),
)
def test_batched_records_from_columns_equal_the_old_batcher_byte_for_byte(
    data: tuple[list[str], list[Cols]],
    max_points: int,
    max_bytes: int,
    linger_ms: int,
) -> None:
    tag_names, batches = data
    enc = TelemetryEncoder(tag_names, QUALITIES)
    limits = {"max_points": max_points, "max_bytes": max_bytes, "linger_ms": linger_ms}
    old_b, new_b = OLD.OldTelemetryBatcher(**limits), TelemetryBatcher(**limits)
    old: list[bytes] = []
    new: list[bytes] = []
    for cols in batches:
        old += old_b.add(OLD.old_points(tag_names, *cols), 0)
        new += new_b.add_rows(enc.rows(*cols), 0)
        assert new == old
    if old_b._points:  # the old copy has no flush(): close what it holds the same way
        old.append(old_b._close())
    assert new + new_b.flush() == old


def test_unknown_quality_codes_and_tag_indexes_are_refused() -> None:
    enc = TelemetryEncoder(["A"], QUALITIES)
    one = np.zeros(1, dtype=np.int64), np.zeros(1)
    with pytest.raises(ValueError, match=r"unknown quality code\(s\) \[9\]"):
        enc.rows(np.zeros(1, np.int32), *one, np.array([9], np.uint8))
    with pytest.raises(ValueError, match="tag index outside 0..0"):
        enc.rows(np.ones(1, np.int32), *one, np.zeros(1, np.uint8))
