"""The alarm outputs' task in the run: write them when an alarm changes (the record is durable
first: :class:`agent.runtime.alarms.AlarmRecorder` appends, then signals), else every tick for
re-assertion and the heartbeat; every write result is an ``output_written`` /
``output_failed`` event (agent/alarm_outputs.py decides, drivers/outputs.py writes).

:class:`OutputSet` holds the writers open for the run and replaces them at a reload
(agent/runtime/reload.py). Invariants: a writer is exited exactly once (at a reload that drops
it, else when the run ends); a replacement waits for the step in progress (never two writes at
once, never a write through a writer being closed); a writer whose ``[[outputs]]`` entry (but
for ``when``, which only the policy reads) and device link, unit and timeout are unchanged is
kept with its state (no rewrite, no heartbeat restart); a dropped writer whose target (link,
unit, table, address) no longer has a writer is written once to its normal state before it is
closed (a removed siren does not keep sounding).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

from agent.alarm_outputs import AlarmOutputs, AlarmStates, OutputPolicy
from agent.logs import kv
from agent.runtime.sink import RecordSink
from drivers import OutputWriter, WriteResult
from drivers.outputs import OutputConfig

__all__ = ["OUTPUT_TICK_S", "OutputSet", "drive_outputs", "report_output"]

log = logging.getLogger("safeedge.pipeline")

OUTPUT_TICK_S = 0.1  # re-assertion and heartbeat granularity; alarm changes wake it at once

Pairs = Sequence[tuple[OutputWriter, OutputPolicy]]
Report = Callable[[str, WriteResult], None]


async def drive_outputs(
    outputs: AlarmOutputs, changed: asyncio.Event, lock: asyncio.Lock | None = None
) -> None:
    """Write the alarm outputs when an alarm changes, else every tick (re-assertion,
    heartbeat). A write waits for its link between polls (one request at a time per bus).
    ``lock``: held for each step (a reload replaces the writers between two steps)."""
    guard = lock if lock is not None else contextlib.nullcontext()
    while True:
        changed.clear()
        async with guard:
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


def _target(w: OutputWriter) -> tuple[object, ...]:
    return (w.link.key, w.unit_id, w.cfg.table, w.cfg.address)


def _how(w: OutputWriter) -> tuple[object, ...]:
    """Where and how ``w`` writes (its ``[[outputs]]`` entry without ``when``: the policy's)."""
    fields = tuple(getattr(w.cfg, f) for f in OutputConfig.__struct_fields__)
    return (*fields, w.link, w.unit_id, w.timeout_s)


def _same(a: OutputWriter, b: OutputWriter) -> bool:
    """Same target and write settings on the same link: the old writer can go on."""
    return _how(a) == _how(b)


class OutputSet:
    """The run's alarm outputs (see the module invariants); ``outputs`` is what the task
    steps, ``lock`` is held by the task for each step."""

    def __init__(self, *, states: AlarmStates, report: Report) -> None:
        self.outputs = AlarmOutputs(writers=[], policies=[], states=states, report=report)
        self.lock = asyncio.Lock()
        self._report = report
        self._held: list[OutputWriter] = []

    async def open(self, pairs: Pairs) -> None:
        """Enter the writers of the run's first config."""
        for writer, _ in pairs:
            await writer.__aenter__()
            self._held.append(writer)
        self.outputs.use([w for w, _ in pairs], [p for _, p in pairs])

    async def replace(self, pairs: Pairs) -> tuple[list[str], list[str]]:
        """Writers for a new config, between two steps; returns the names of the outputs
        (re)built and of those dropped. Unchanged writers are kept (``pairs`` holds freshly
        built ones: they are used only where the old one cannot go on)."""
        async with self.lock:
            old = list(self._held)
            writers: list[OutputWriter] = []
            built: list[str] = []
            for writer, _ in pairs:
                keep = next((w for w in old if w not in writers and _same(w, writer)), None)
                if keep is None:
                    await writer.__aenter__()
                    self._held.append(writer)
                    built.append(writer.cfg.name)
                writers.append(keep if keep is not None else writer)
            dropped = [w for w in old if w not in writers]
            targets = {_target(w) for w in writers}
            for w in dropped:
                if _target(w) not in targets:  # nothing writes it any more: leave it normal
                    result = await w.apply(False)
                    if result is not None:
                        self._report("output_written" if result.ok else "output_failed", result)
                self._held.remove(w)
                await w.__aexit__(None, None, None)
            self.outputs.use(writers, [p for _, p in pairs])
            return built, [w.cfg.name for w in dropped]

    async def aclose(self) -> None:
        """Exit every writer still held (the run ends)."""
        held, self._held = self._held, []
        for w in held:
            await w.__aexit__(None, None, None)
