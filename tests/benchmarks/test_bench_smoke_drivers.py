"""The driver benchmark script runs end to end with tiny sizes and prints its tables."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_drivers.py"

pytestmark = pytest.mark.integration


def test_the_driver_benchmark_prints_its_tables_and_plans_the_optimum_with_tiny_sizes() -> None:
    args = [sys.executable, str(SCRIPT), "--tags", "60", "--cycles", "2", "--jitter-s", "0.6"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.startswith("machine: ")
    rows = [line.split("|") for line in out.splitlines() if line.startswith("|     60 |")]
    assert sorted(r[2].strip() for r in rows) == ["dense", "sparse"]
    assert [r[6].strip() for r in rows] == ["1.00", "1.00"]  # requests per cycle ÷ the optimum
    assert "with a silent device" in out
    assert "8 × 40" in out or "socat not installed" in out
