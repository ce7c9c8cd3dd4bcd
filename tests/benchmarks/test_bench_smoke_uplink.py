"""The uplink benchmark script runs end to end with tiny sizes and prints its table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]


@pytest.mark.integration
def test_the_uplink_benchmark_prints_its_table_with_tiny_sizes() -> None:
    done = subprocess.run(
        [sys.executable, "benchmarks/bench_uplink.py", "--messages", "50", "--points", "10",
         "--tags", "20", "--inflight", "10", "--demo-seconds", "30", "--rounds", "1"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("bench_uplink: ")
    assert "CPUs" in lines[0]
    table = "\n".join(lines)
    for row in ("bare paho QoS 1 publisher (baseline)", "buffer → forwarder → subscriber",
                "drain 1 h of 20 tags", "bytes on the wire per reading: body v1",
                "  body v2 + zlib", "demo site, shipped policy"):  # fmt: skip
        assert row in table
