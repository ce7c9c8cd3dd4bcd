"""Which kernels the agent runs: the rule kernels and the telemetry-statistics kernels, each
the native module built by ``safeedge warm-cache`` or numba's JIT (:mod:`rules.native`).

The agent counts as ``native`` only when both sets are: one JIT set loads numba for all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agent.shaping.stats import stats_kernels
from rules.native import rule_kernels

__all__ = ["KernelSummary", "kernel_summary"]


@dataclass(frozen=True, slots=True)
class KernelSummary:
    impl: str  # "native" or "jit"
    reason: str  # why the JIT runs; "" when native
    paths: tuple[Path, ...]  # the native modules loaded


def kernel_summary() -> KernelSummary:
    """Load (once per process) and describe both kernel sets."""
    sets = (rule_kernels(), stats_kernels())
    paths = tuple(k.path for k in sets if k.path is not None)
    if all(k.impl == "native" for k in sets):
        return KernelSummary("native", "", paths)
    reasons = dict.fromkeys(k.reason for k in sets if k.impl == "jit")  # one line per cause
    return KernelSummary("jit", "; ".join(reasons), paths)
