"""The driver benchmark script runs end to end with tiny sizes and prints its tables."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_drivers.py"

pytestmark = pytest.mark.integration


def test_the_driver_benchmark_prints_its_tables_and_plans_the_optimum_with_tiny_sizes() -> None:
    args = [sys.executable, str(SCRIPT), "--tags", "60", "--cycles", "2", "--jitter-s", "0.6",
            "--random-maps", "3", "--refusal-s", "0.5", "--outage-s", "1",
            "--recovery-periods", "0.2", "--probe-s", "0.4"]  # fmt: skip
    out = subprocess.run(args, capture_output=True, text=True, timeout=180, check=True).stdout
    assert out.startswith("machine: ")
    rows = [line.split("|") for line in out.splitlines() if line.startswith("|     60 |")]
    assert sorted(r[2].strip() for r in rows) == ["dense", "sparse"]
    assert [r[6].strip() for r in rows] == ["1.00", "1.00"]  # requests per cycle ÷ the optimum
    assert "with a silent device" in out
    assert "8 × 40" in out or "socat not installed" in out
    maps = [line.split("|") for line in out.splitlines()
            if line.startswith(("| field:", "| random #"))]  # fmt: skip
    assert len(maps) == 6 and all(r[7].strip() == "1.00" for r in maps)  # the optimum, always
    overlap = [line.split("|") for line in out.splitlines() if line.startswith("| overlap")]
    assert len(overlap) == 3 and all(r[7].strip() == "1.00" for r in overlap)
    transient = next(line for line in out.splitlines() if line.startswith("| 0.5 s |"))
    assert transient.split("|")[6].strip() == "yes"  # merged within two polls
    recovery = [line.split("|") for line in out.splitlines() if "| 0.2 s | 0.4 s |" in line]
    assert [r[1].strip() for r in recovery] == ["modbus tcp", "serial line"]
    assert all(float(r[7]) <= 1.0 for r in recovery)  # within max(2 x period, probe + period)
