"""Counters of one run, shared by the parts that count (scheduler, ingest, sink, watchdog)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from agent.runtime.devicestats import DevicePolls

__all__ = ["RuntimeStats"]


@dataclass(slots=True)
class RuntimeStats:
    """Monotonic counters since the run started; ``last_poll_monotonic`` feeds the watchdog."""

    polls: int = 0
    samples: int = 0
    alarms: int = 0
    missed_deadlines: int = 0
    append_failures: int = 0
    last_poll_monotonic: float = field(default_factory=time.monotonic)
    started_monotonic: float = field(default_factory=time.monotonic)
    devices: DevicePolls = field(default_factory=DevicePolls)  # per-device poll figures
