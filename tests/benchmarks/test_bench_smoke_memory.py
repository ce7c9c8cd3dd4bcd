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
    tables = done.stdout.split("\n\n")[1:3]  # the JIT's, then the native kernels'
    assert tables[0].startswith("numba's JIT") and tables[1].startswith("native kernels")
    totals = []
    for table, kernel_row in zip(tables, ("numba + llvmlite", "native modules"), strict=True):
        rows = [line for line in table.splitlines() if line.startswith("| ")]
        names = [r.split("|")[1].strip() for r in rows[1:]]
        assert names[0] == "bare interpreter (baseline)"
        assert any(kernel_row in n for n in names)
        assert names[-1].startswith("runtime built for 10,000 tags")
        totals.append(float(rows[-1].split("|")[3]))
    jit, native = totals
    assert 10 < native < jit < 2000  # the native kernels leave numba and LLVM out
    assert "native saves" in done.stdout
