"""The buffer benchmark script runs end to end at tiny sizes and prints its table (a smoke
test, not a timed one: the figures are not checked)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_buffer.py"


def test_the_buffer_benchmark_prints_a_table_with_machine_baseline_and_targets(
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec = importlib.util.spec_from_file_location("bench_buffer", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_buffer"] = module
    try:
        spec.loader.exec_module(module)
        assert (
            module.main(
                [
                    *("--records", "20", "--tags", "50", "--small-tags", "5"),
                    *("--repeat", "1", "--ledger-seconds", "5"),
                ]
            )
            == 0
        )
    finally:
        del sys.modules["bench_buffer"]
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("machine: ")
    rows = [line for line in out if line.startswith(("50-reading", "5-reading"))]
    assert len(rows) == 10
    assert rows[0].startswith("50-reading records, unsealed, no fsync (baseline)")
    assert rows[0].split()[-6] == "1.00"  # the baseline is its own ratio
    assert out[-1].startswith("targets ")
