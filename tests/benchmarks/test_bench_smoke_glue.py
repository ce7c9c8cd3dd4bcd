"""The glue benchmark runs end to end with tiny sizes (its numbers are not checked; its own
check that OLD and NEW bodies are identical on every poll is)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_bench_glue_runs_with_tiny_sizes() -> None:
    run = subprocess.run(
        [sys.executable, "benchmarks/bench_glue.py", "--sizes", "20,50", "--polls", "5",
         "--warm", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "OLD/NEW" in run.stdout
    for stage in ("rbe", "shape", "glue", "all"):
        assert f"    50 {stage}" in run.stdout
