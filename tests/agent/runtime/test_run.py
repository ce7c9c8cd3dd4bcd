"""The run as a whole with a real store and engine, its device standing in for a driver:
the ordered shutdown flushes held telemetry, and a task that ends fails the run after it."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from types import TracebackType

import numpy as np
import pytest

from agent.runtime import Components, Runtime
from agent.runtime.build import open_store
from buffer.record import Stream
from drivers import SampleBatch
from tests.agent.runtime.conftest import NOW, make_components
from tests.agent.runtime.helpers import bodies
from tests.support.telemetry import points_of


class CountingDevice:
    """A driver stand-in (the run's dependency): T1 = 1, 2, 3... every 10 ms; raises on the
    ``fail_at``-th poll when given."""

    name = "dev"
    bus = "bus"
    poll_interval_s = 0.01

    def __init__(self, fail_at: int | None = None) -> None:
        self.online = False
        self.polls = 0
        self._fail_at = fail_at
        self.lost_reason = self.last_error = ""
        self.last_outage_ms = 0

    def health(self) -> dict[str, object]:  # what the status snapshot reads
        return {"device": self.name, "online": self.online, "reason": "", "error": ""}

    async def __aenter__(self) -> CountingDevice:
        self.online = True
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.online = False

    async def poll(self) -> SampleBatch:
        self.polls += 1
        if self.polls == self._fail_at:
            raise OSError("the line went away")
        return SampleBatch(
            tag=np.array([0], dtype=np.int32),
            ts_ms=np.array([NOW + self.polls], dtype=np.int64),
            value=np.array([float(self.polls)]),
            quality=np.zeros(1, dtype=np.uint8),
        )


def _components(tmp_path: Path, device: CountingDevice) -> Components:
    c = make_components(tmp_path, uplink_extra="telemetry_linger_ms = 60000\n")
    return dataclasses.replace(c, buses={"bus": (device,)})


def _telemetry_values(c: Components) -> list[float]:
    store = open_store(c)
    try:
        return [p[2] for b in bodies(store, Stream.TELEMETRY) for p in points_of(b)]
    finally:
        store.close()


def test_stop_flushes_the_held_telemetry_and_closes_the_store(tmp_path: Path) -> None:
    device = CountingDevice()
    c = _components(tmp_path, device)
    runtime = Runtime(c, flush_timeout_s=0.1)

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(runtime.run(stop))
        await asyncio.wait_for(runtime.ready.wait(), 60)
        while device.polls < 5:  # noqa: ASYNC110 - the device has no event to wait on
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, 20)

    asyncio.run(main())
    assert not device.online  # left its context
    values = _telemetry_values(c)  # all lingered: appended only by the shutdown flush
    assert values == [float(i) for i in range(1, len(values) + 1)]
    assert len(values) == runtime.stats.polls >= 5


def test_a_poll_task_that_fails_ends_the_run_after_the_ordered_stop(tmp_path: Path) -> None:
    device = CountingDevice(fail_at=4)
    c = _components(tmp_path, device)
    runtime = Runtime(c, flush_timeout_s=0.1)

    async def main() -> None:
        await asyncio.wait_for(runtime.run(asyncio.Event()), 60)

    with pytest.raises(RuntimeError, match="pipeline task 'poll bus' ended") as info:
        asyncio.run(main())
    assert isinstance(info.value.__cause__, OSError)
    assert _telemetry_values(c) == [1.0, 2.0, 3.0]  # held points were still appended
