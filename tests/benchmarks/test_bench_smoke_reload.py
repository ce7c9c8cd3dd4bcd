"""The reload benchmark runs one short round on this tree: a shaping edit is applied in place,
nothing reopened (its timings are not checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]

pytestmark = pytest.mark.integration


def test_bench_reload_runs_one_short_round() -> None:
    run = subprocess.run(
        [sys.executable, "benchmarks/bench_reload.py", "--rounds", "1", "--edits", "policy",
         "--steady-s", "1.5", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    (row,) = [json.loads(ln) for ln in run.stdout.splitlines()]
    assert row["mode"] == "in_place" and row["readies"] == 1 and row["mqtt_connects"] == 1, row
    assert row["max_gap_s"] > 0
