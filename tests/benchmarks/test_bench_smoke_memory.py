"""The memory benchmark prints what each part of the stack adds to the agent's RSS."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parents[2]


def test_the_memory_benchmark_prints_one_row_per_part_of_the_stack() -> None:
    done = subprocess.run(
        [sys.executable, "benchmarks/bench_memory.py"],
        capture_output=True, text=True, cwd=REPO, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    names = [r.split("|")[1].strip() for r in rows[1:]]
    assert names[0] == "bare interpreter (baseline)"
    assert "numba + llvmlite" in names and names[-1].startswith("runtime built for 10,000 tags")
    total = float(rows[-1].split("|")[3])
    assert 10 < total < 2000
