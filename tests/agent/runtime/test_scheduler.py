"""The per-bus poll loop: each device at its own period, late slots counted and skipped; and
stopping tasks that swallow a cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import time

from agent.runtime import RuntimeStats
from agent.runtime.scheduler import cancel_and_wait, poll_bus
from drivers import Device, SampleBatch


class TimedDevice:
    """Stands in for a driver (a dependency of the loop, not the code under test): answers
    after ``takes_s`` with an empty batch."""

    def __init__(self, name: str, period_s: float, takes_s: float) -> None:
        self.name = name
        self.bus = "bus"
        self.poll_interval_s = period_s
        self.online = True
        self.lost_reason = ""  # never lost (drivers.Device: "" while online)
        self.last_error = ""
        self._takes = takes_s

    async def poll(self) -> SampleBatch:
        await asyncio.sleep(self._takes)
        return SampleBatch.empty()


async def _run(devices: list[TimedDevice], seconds: float, stats: RuntimeStats) -> list[str]:
    polled: list[str] = []
    stop = False

    def on_batch(device: Device, batch: SampleBatch) -> None:
        polled.append(device.name)

    task = asyncio.create_task(
        poll_bus(devices, on_batch=on_batch, stats=stats, stopping=lambda: stop)  # type: ignore[arg-type]
    )
    await asyncio.sleep(seconds)
    stop = True
    await cancel_and_wait([task])
    return polled


def test_devices_on_one_bus_are_polled_at_their_own_periods() -> None:
    stats = RuntimeStats()
    fast, slow = TimedDevice("fast", 0.05, 0.0), TimedDevice("slow", 0.2, 0.0)
    polled = asyncio.run(_run([fast, slow], 0.5, stats))
    assert 8 <= polled.count("fast") <= 12
    assert 2 <= polled.count("slow") <= 4
    assert stats.missed_deadlines == 0


def test_a_late_poll_skips_its_missed_slots_instead_of_bursting() -> None:
    stats = RuntimeStats()
    late = TimedDevice("late", 0.05, 0.17)  # each poll eats ~3 periods
    polled = asyncio.run(_run([late], 0.6, stats))
    assert 2 <= len(polled) <= 5  # not 12: missed slots are not polled afterwards
    assert stats.missed_deadlines >= 2 * (len(polled) - 1)


def test_cancel_and_wait_cancels_again_until_the_task_stops() -> None:
    async def stubborn() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # swallowed, as in bpo-42130
            await asyncio.sleep(10)
        await asyncio.sleep(10)

    async def main() -> float:
        task = asyncio.create_task(stubborn())
        await asyncio.sleep(0)
        t0 = time.monotonic()
        await cancel_and_wait([task], timeout_s=5)
        assert task.cancelled()
        return time.monotonic() - t0

    assert asyncio.run(main()) < 1.0
