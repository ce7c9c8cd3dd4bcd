"""The rule benchmark script runs end to end with tiny sizes (its numbers are not checked)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.mark.slow
def test_bench_rules_runs_with_tiny_sizes() -> None:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(ROOT / ".cache" / "numba")}
    run = subprocess.run(
        [sys.executable, "benchmarks/bench_rules.py", "--sizes", "20,50", "--samples", "2000",
         "--repeats", "1", "--twin-tags", "3", "--twin-ticks", "2", "--latency-tags", "50",
         "--latency-ticks", "5", "--start-tags", "10", "--start-repeats", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    for heading in ("machine:", "1. Throughput", "2. One tick", "3. Start", "4. RSS"):
        assert heading in run.stdout
