"""Ring and output-buffer growth inside one batch: events still equal the naive twin's, and
inputs of any layout use the one compiled kernel."""

from __future__ import annotations

import numpy as np

from rules import kernels
from tests.rules.harness import Sample, events_match, run_engine, run_naive
from tests.rules.naive import NaiveEngine
from tests.rules.test_properties import build

PARAMS = {
    "high": 8.3141592653589793,
    "low": 1.3141592653589793,
    "roc_limit_per_min": 30.0,
    "roc_window_s": 40.0,
    "trend_window_s": 20.0,
    "trend_horizon_s": 10.0,
    "stuck_s": 3.0,
}


def test_rings_and_output_grow_mid_batch_without_changing_events() -> None:
    # 600 one-second samples per tag in one batch: every ring grows 16 -> 64 (some into the
    # slack, some by re-packing) and the saw-tooth emits far more than 1,024 events.
    params = [dict(PARAMS), dict(PARAMS, roc_window_s=5.0), {"high": 1.0}, dict(PARAMS)]
    ops = [
        Sample(k, 1000 * t + k, float((t * (k + 3)) % 11), (t + k) % 37 != 0)
        for t in range(600)
        for k in range(len(params))
    ]
    engine = build(params)
    got = run_engine(engine, ops)
    want = run_naive(NaiveEngine(params), ops)
    assert len(want) > 1024
    assert events_match(got, want)


def test_read_only_inputs_do_not_compile_a_second_kernel() -> None:
    engine = build([{"high": 1.0}])
    engine.warm_up()
    before = len(getattr(kernels.evaluate_batch, "signatures", []))  # none without the JIT
    arrays = [
        np.zeros(3, dtype=np.int32),
        np.arange(3, dtype=np.int64),
        np.full(3, 2.0),
        np.zeros(3, dtype=np.uint8),
    ]
    for a in arrays:
        a.flags.writeable = False
    assert [e.event for e in engine.evaluate(*arrays)] == ["raise"]
    assert len(getattr(kernels.evaluate_batch, "signatures", [])) == before
