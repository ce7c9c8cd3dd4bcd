"""The console benchmark runs end to end at a tiny size (one browser, one second per scenario)
and prints its table (a smoke test: the figures are not checked)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_console_benchmark_prints_the_agents_cpu_and_poll_jitter_with_a_browser_open(
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec = importlib.util.spec_from_file_location("bench_console", BENCH / "bench_console.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_console"] = module
    try:
        spec.loader.exec_module(module)
        args = ["--seconds", "1", "--settle-s", "0.5", "--browsers", "1", "--scenarios", "live"]
        assert module.main(args) == 0
    finally:
        del sys.modules["bench_console"]
        sys.modules.pop("bench_drivers", None)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("machine: ")
    (row,) = [line for line in out if line.startswith("| live x1 |")]
    assert float(row.split("|")[2]) >= 0  # the agent's CPU (no "off" baseline in this run)
    assert out[-1].startswith("targets: ")
