"""Per-bus poll loops and stopping them.

Invariants: one task per bus (TCP devices each own their connection, all devices on one
serial port share one task, so requests on a serial line never overlap); each device is polled
at its own period; a missed deadline is counted and skipped, never queued behind the late one.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from agent.logs import kv
from agent.runtime.stats import RuntimeStats
from drivers import Device, SampleBatch

__all__ = ["cancel_and_wait", "poll_bus"]

log = logging.getLogger("safeedge.pipeline")


async def poll_bus(
    devices: Sequence[Device],
    *,
    on_batch: Callable[[Device, SampleBatch], None],
    stats: RuntimeStats,
    stopping: Callable[[], bool],
) -> None:
    """Poll every device of one bus at its own period, one request stream at a time."""
    loop = asyncio.get_running_loop()
    due = {d.name: loop.time() for d in devices}
    while not stopping():
        device = min(devices, key=lambda d: due[d.name])
        delay = due[device.name] - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        batch = await device.poll()
        on_batch(device, batch)
        period = device.poll_interval_s
        nxt = due[device.name] + period
        now = loop.time()
        if now > nxt:  # late: skip the missed slots instead of bursting to catch up
            missed = math.floor((now - nxt) / period) + 1
            stats.missed_deadlines += missed
            nxt += missed * period
        due[device.name] = nxt


async def cancel_and_wait(tasks: Sequence[asyncio.Task[Any]], timeout_s: float = 10.0) -> None:
    """Cancel ``tasks`` and wait until they are done, cancelling again while they run.

    Python 3.11's ``asyncio.wait_for`` can swallow a cancellation that races with its inner
    future completing (bpo-42130; pymodbus uses it, and a driver might), so a single
    ``cancel()`` may be lost and a poll loop would run on, hanging shutdown forever.
    """
    deadline = time.monotonic() + timeout_s
    pending = [t for t in tasks if not t.done()]
    while pending and time.monotonic() < deadline:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=0.1)
        pending = [t for t in pending if not t.done()]
    if pending:
        log.error(kv("tasks_not_stopping", tasks=",".join(t.get_name() for t in pending)))
