"""The alarm outputs' task in the run: write them when an alarm changes (the record is durable
first: :class:`agent.runtime.alarms.AlarmRecorder` appends, then signals), else every tick for
re-assertion and the heartbeat; every write result is an ``output_written`` /
``output_failed`` event (agent/alarm_outputs.py decides, drivers/outputs.py writes)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from agent.alarm_outputs import AlarmOutputs
from agent.logs import kv
from agent.runtime.sink import RecordSink
from drivers import WriteResult

__all__ = ["OUTPUT_TICK_S", "drive_outputs", "report_output"]

log = logging.getLogger("safeedge.pipeline")

OUTPUT_TICK_S = 0.1  # re-assertion and heartbeat granularity; alarm changes wake it at once


async def drive_outputs(outputs: AlarmOutputs, changed: asyncio.Event) -> None:
    """Write the alarm outputs when an alarm changes, else every tick (re-assertion,
    heartbeat). A write waits for its link between polls (one request at a time per bus)."""
    while True:
        changed.clear()
        await outputs.step()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(OUTPUT_TICK_S):
                await changed.wait()


def report_output(sink: RecordSink, kind: str, result: WriteResult) -> None:
    fields = result.as_dict()
    if not result.ok:
        log.warning(kv(kind, **fields))
    elif result.changed:  # re-assertions every reassert_s are events, not log lines
        log.info(kv(kind, **fields))
    sink.event(kind, **fields)
