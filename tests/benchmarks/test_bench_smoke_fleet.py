"""The fleet benchmark script runs end to end with tiny sizes and prints its table and histogram."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]


@pytest.mark.integration
def test_the_fleet_benchmark_prints_its_table_and_histograms_with_tiny_sizes() -> None:
    done = subprocess.run(
        [sys.executable, "benchmarks/bench_fleet.py", "--gateways", "4", "--outage", "1",
         "--single-rounds", "1"],
        capture_output=True, text=True, cwd=REPO, timeout=110,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("bench_fleet: ") and "CPUs" in out.splitlines()[0]
    assert "reconnect_max_s 5 (default)" in out and "reconnect_max_s 30 (former default)" in out
    assert "fleet of 4, reconnect_max_s 5: seconds from broker back to CONNACK" in out
    assert out.count(" 24/24 ") == 2  # every record of both runs reached the platform
