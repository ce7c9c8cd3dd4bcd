"""systemd's watchdog, petted only while polling makes progress."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from agent.notify import notify
from agent.runtime.stats import RuntimeStats

__all__ = ["watchdog"]


async def watchdog(
    *,
    interval_s: float,
    slowest_poll_s: float,
    stats: RuntimeStats,
    send: Callable[[str], object] = notify,
    monotonic: Callable[[], float] = time.monotonic,
) -> None:
    """Every ``interval_s``, send ``WATCHDOG=1`` if a poll finished within the last
    ``3 * slowest_poll_s + interval_s`` seconds; otherwise stay silent so systemd restarts us."""
    while True:
        await asyncio.sleep(interval_s)
        if monotonic() - stats.last_poll_monotonic < 3 * slowest_poll_s + interval_s:
            send("WATCHDOG=1")
