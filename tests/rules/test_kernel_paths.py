"""The kernel's shortcuts agree with the twin where they switch over, and the kernel stays flat.

The roc check decides ``|rate| >= limit`` without dividing when the rate is clearly over twice or
under half the limit, and exactly otherwise; these traces put rates on and around those
switch-over points and at extreme magnitudes. The trend fit runs in milliseconds; a long window
of irregular timestamps checks it against the twin's exact fit.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rules import AlarmEvent
from rules.engine import _events
from tests.rules.harness import Sample, events_match, one_tag, run_engine, run_naive
from tests.rules.naive import NaiveEngine


def _agree(params: dict[str, object], ops: list[Sample]) -> None:
    engine = one_tag(**params)
    got = run_engine(engine, ops)
    want = run_naive(NaiveEngine([engine.params(0)]), ops)
    assert events_match(got, want), f"engine {got}\n twin {want}"


@pytest.mark.parametrize(
    "factor", [0.25, 0.5, 0.5000001, 0.9999999, 1.0, 1.0000001, 2.0, 2.0000001, 4.0]
)
@pytest.mark.parametrize("limit", [6.0, 1e-290, 1e290])
def test_roc_agrees_with_the_twin_around_the_shortcut_margins(factor: float, limit: float) -> None:
    # one sample every 10 s, 60 s window: the rate against the first sample is dv / (dt / 60 s)
    ops = [Sample(0, 0, 0.0)]
    for step in range(1, 8):
        dv = limit * factor * (10.0 * step) / 60.0
        ops.append(Sample(0, 10_000 * step, dv * (1 if step % 2 else -1)))
    _agree({"roc_limit_per_min": limit, "roc_window_s": 60.0}, ops)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # numpy scalars, no JIT
def test_roc_agrees_with_the_twin_at_extreme_values() -> None:
    values = [0.0, 1e308, -1e308, 5e-324, -5e-324, 1e-300, 1.0, 1e300, 0.0]
    ops = [Sample(0, 250 * j, v) for j, v in enumerate(values)]
    for limit in (1e-300, 1.0, 1e300, 1.7e308):
        _agree({"roc_limit_per_min": limit, "roc_window_s": 1.0}, ops)


def test_trend_in_milliseconds_agrees_with_the_twin_on_irregular_timestamps() -> None:
    rng = random.Random(4)
    ts, ops = 1_700_000_000_000, []
    for j in range(400):
        ts += rng.choice([1, 7, 250, 999, 1000, 1001, 3000])
        ops.append(Sample(0, ts, round(50 + 30 * ((j // 40) % 2 * 2 - 1) * (j % 40) / 40, 2)))
    _agree(
        {
            "high": 70.3141592653589793,
            "low": 30.3141592653589793,
            "trend_window_s": 20.0,
            "trend_horizon_s": 30.0,
        },
        ops,
    )


_COUNT_INCREFS = """
import json, warnings
from rules import kernels
from tests.rules.harness import one_tag
one_tag(high=1.0).warm_up()
sig = kernels.evaluate_batch.signatures[0]
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    llvm = kernels.evaluate_batch.inspect_llvm(sig)
body = llvm.split("\\ndefine ")[1] if "\\ndefine " in llvm else ""
print(json.dumps({"has_body": bool(body), "increfs": body.count("@NRT_incref(")}))
"""


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="needs the compiled kernel")
def test_the_compiled_kernel_has_no_reference_counting_in_its_loop(tmp_path: Path) -> None:
    # numba's inlining of array-taking helpers left atomic incref/decref calls on every sample
    # (~4x slower); the flat kernel only has them at entry and exit, once per argument array.
    # A kernel loaded from the on-disk cache keeps no LLVM IR, so it is compiled afresh in a
    # child with an empty cache directory: the check always runs.
    env = os.environ | {"NUMBA_CACHE_DIR": str(tmp_path / "numba-cache"), "SAFEEDGE_KERNELS": "jit"}
    out = subprocess.run(
        [sys.executable, "-c", _COUNT_INCREFS],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["has_body"], "numba returned no LLVM IR for the freshly compiled kernel"
    n_arrays = 10
    assert found["increfs"] <= n_arrays


def test_events_built_by_slot_setting_equal_constructed_ones() -> None:
    rows = np.array([[0, 0, 0, 1], [1, 1, 0, 2], [1, 2, 3, 0], [2, 3, 0, 1], [2, 4, 0, 1]])
    extras = np.array([2.0, 1.5, np.nan, -3.0, 7.25])
    tag = np.array([4, 5, 6], dtype=np.int32)
    ts = np.array([10, 20, 30], dtype=np.int64)
    val = np.array([np.nan, 2.5, -1.0])
    want = [
        AlarmEvent(10, 4, "fault", "raise", 1, None, {"reason": "range"}),
        AlarmEvent(20, 5, "high", "raise", 2, 2.5, {"limit": 1.5}),
        AlarmEvent(20, 5, "low", "clear", 0, 2.5, {}),
        AlarmEvent(30, 6, "roc", "raise", 1, -1.0, {"rate_per_min": -3.0}),
        AlarmEvent(30, 6, "trend_high", "raise", 1, -1.0, {"eta_s": 7.25}),
    ]
    got = _events(rows, extras, tag, ts, val)
    assert got == want
    assert [repr(e) for e in got] == [repr(e) for e in want]
    assert all(type(e.ts_ms) is int and type(e.tag) is int and type(e.level) is int for e in got)
