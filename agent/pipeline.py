"""``Pipeline``: config in, running agent out — a thin facade over :mod:`agent.runtime`.

Kept so callers (``safeedge run``, the tests) build and run the agent in one call; the parts
and their invariants are documented in agent/runtime/.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from agent.config import AgentConfig, ResolvedPaths
from agent.runtime import Runtime, RuntimeStats, build

__all__ = ["Pipeline", "PipelineStats", "wall_clock_ms"]

PipelineStats = RuntimeStats


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Pipeline(Runtime):
    """Builds every component from the config (no I/O) and runs them until ``stop`` is set."""

    def __init__(
        self,
        cfg: AgentConfig,
        paths: ResolvedPaths,
        *,
        password: str | None = None,
        clock_ms: Callable[[], int] = wall_clock_ms,
        flush_timeout_s: float = 5.0,
    ) -> None:
        super().__init__(
            build(cfg, paths, password=password, clock_ms=clock_ms),
            flush_timeout_s=flush_timeout_s,
        )
        self.cfg = cfg
        self.paths = paths
