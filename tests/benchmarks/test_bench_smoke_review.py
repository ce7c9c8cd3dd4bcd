"""The review benchmark script runs end to end with tiny sizes (its numbers are not checked)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.mark.slow
def test_bench_review_runs_with_tiny_sizes() -> None:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(ROOT / ".cache" / "numba")}
    run = subprocess.run(
        [sys.executable, "benchmarks/bench_review.py", "--tags", "20", "--days", "1",
         "--twin-days", "0.5", "--tune-days", "0.2", "--recorder-tags", "50",
         "--recorder-ticks", "5", "--mem-devices", "2", "--mem-tags", "50", "--mem-s", "30"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=110, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    for heading in (
        "machine:",
        "1. Alarms",
        "2. Tune",
        "twin figures equal: True",
        "#9",
        "3. Recorder",
        "Recorder memory",
        "ring arithmetic",
    ):
        assert heading in run.stdout
