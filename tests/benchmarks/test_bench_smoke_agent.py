"""The end-to-end agent benchmark runs with a tiny site and prints its table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]


@pytest.mark.integration
def test_the_agent_benchmark_measures_the_agent_and_its_floor_on_a_tiny_site() -> None:
    done = subprocess.run(
        [sys.executable, "benchmarks/bench_agent.py", "--sites", "1x20", "idle",
         "--window-s", "3", "--warmup-s", "1"],
        capture_output=True, text=True, cwd=REPO, timeout=180, env={**os.environ},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("machine: ") and "CPUs" in lines[0]
    site = next(line for line in lines if line.startswith("| 1×20 |"))
    cells = [c.strip() for c in site.strip("|").split("|")]
    agent_cpu, floor_cpu = float(cells[1]), float(cells[2])
    assert 0 <= agent_cpu < 100 and 0 <= floor_cpu < 100
    requests, optimum = cells[8].split()
    assert optimum == "(1)"
    assert 0.5 <= float(requests) <= 1.5  # the PLC counted about one request per 1 s cycle
    p50, p95 = (float(x) for x in cells[7].split()[0].split("/"))
    assert 0 < p50 <= p95 < 1000  # readings arrived at the subscriber, in well under a second
    f50, f95 = (float(x) for x in cells[7].split()[1].strip("()").split("/"))
    assert 0 < f50 <= f95 < 1000  # the floor, beside it on its own topic, was measured too
    assert any(line.startswith("| idle") for line in lines)
