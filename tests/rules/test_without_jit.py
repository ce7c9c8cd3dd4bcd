"""The rule tests once more with NUMBA_DISABLE_JIT=1: the kernel as plain Python must agree too
(and coverage tools and debuggers see the same code paths)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.mark.slow
def test_the_rule_suite_passes_with_the_jit_disabled() -> None:
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    probe = subprocess.run(
        [sys.executable, "-c", "from rules import kernels; print(type(kernels.evaluate_batch))"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "<class 'function'>"  # really the Python twin of the kernel
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/rules", "-q", "-m", "not slow",
         "-p", "no:cacheprovider", "-x"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout
