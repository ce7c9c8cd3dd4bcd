"""One poll's batch: device health → rules → alarm records → telemetry shaping → store, and
the incident recorder (which sees the whole batch: report-by-exception does not thin it).

Invariants: alarms are evaluated on every sample (report-by-exception only shapes telemetry);
a poll's records (device health event, alarms, telemetry, incident windows) are committed in
one store transaction, its alarm records appended before its telemetry record; the alarm
outputs and observers see the poll's alarms after that commit; a device becomes "lost" only
after it was known (a push device before its first period is not lost); telemetry goes from
the batch's columns to encoded rows without a Python object per sample.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from agent.logs import kv
from agent.runtime.alarms import AlarmRecorder
from agent.runtime.incidents import IncidentTap
from agent.runtime.sink import RecordSink
from agent.runtime.stats import RuntimeStats
from agent.shaping import TelemetryShaper
from buffer.record import Stream
from drivers import Device, SampleBatch
from rules import RuleEngine

__all__ = ["Ingest"]

log = logging.getLogger("safeedge.pipeline")


class Ingest:
    """Handles every batch the scheduler delivers (event loop thread only)."""

    def __init__(
        self,
        *,
        engine: RuleEngine,
        alarms: AlarmRecorder,
        shaper: TelemetryShaper,
        sink: RecordSink,
        stats: RuntimeStats,
        clock_ms: Callable[[], int],
        incidents: IncidentTap | None = None,
    ) -> None:
        """``incidents``: the incident recorder, fed every batch before report-by-exception."""
        self._engine = engine
        self._alarms = alarms
        self._shaper = shaper
        self._sink = sink
        self._stats = stats
        self._clock_ms = clock_ms
        self._incidents = incidents
        self._online: dict[str, bool] = {}
        # told of every batch after its records are appended (the local console's live values)
        self.observers: list[Callable[[Device, SampleBatch], None]] = []

    def use_engine(self, engine: RuleEngine) -> None:
        """A reload swapped the rule engine (same tag table; between two batches)."""
        self._engine = engine

    def use_shaper(self, shaper: TelemetryShaper) -> None:
        """A reload changed the telemetry shaping (same tag table; between two batches): what
        the old shaper holds is appended first (its open statistics windows close early, as
        at a stop), then every later sample goes through ``shaper``."""
        held = self._shaper.flush()
        if held:
            self._sink.append(Stream.TELEMETRY, held)
        self._shaper = shaper

    def on_batch(self, device: Device, batch: SampleBatch) -> None:
        self._stats.polls += 1
        self._stats.samples += len(batch)
        self._stats.last_poll_monotonic = time.monotonic()
        with self._sink.one_transaction():  # the poll's records: one store transaction
            self.track_device(device.name, device.online, batch, device=device)
            if len(batch):  # else e.g. a serial-line device with no new frame this period
                events = self._engine.evaluate(batch.tag, batch.ts_ms, batch.value, batch.quality)
                self._alarms.record(events)
                self.append_telemetry(batch)
                if self._incidents is not None:
                    self._incidents.on_poll(batch, events)
        for observe in self.observers:
            observe(device, batch)

    def track_device(
        self, name: str, online: bool, batch: SampleBatch, *, device: Device | None = None
    ) -> None:
        """Append ``device_lost`` (with the driver's ``reason`` and last ``error``) or
        ``device_restored`` (with the outage's ``outage_ms``) on a change of ``online``."""
        was = self._online.get(name)
        if was is None and not online and not len(batch):
            return  # nothing known yet (a push device before its first period): not "lost"
        self._online[name] = online
        if was == online or (was is None and online):
            return
        kind = "device_restored" if online else "device_lost"
        ts = int(batch.ts_ms[0]) if len(batch) else self._clock_ms()
        why: dict[str, object] = {}
        if device is not None:
            why = (
                {"outage_ms": device.last_outage_ms}
                if online
                else {"reason": device.lost_reason or "unknown", "error": device.last_error}
            )
        (log.info if online else log.warning)(kv(kind, device=name, **why))
        self._sink.event(kind, device=name, at_ms=ts, **why)

    def append_telemetry(self, batch: SampleBatch) -> None:
        # Policy, precision, report-by-exception, statistics and encoding: agent/shaping/.
        # ``exact``: position -> exact int64/uint64 (the drivers), sent as a JSON integer.
        bodies = self._shaper.add(
            batch.tag, batch.ts_ms, batch.value, batch.quality, self._clock_ms(), batch.exact
        )
        if bodies:
            self._sink.append(Stream.TELEMETRY, bodies)

    def flush(self) -> None:
        """Append whatever telemetry the shaper holds and close the open incidents (at
        shutdown, after polls stopped)."""
        held = self._shaper.flush()
        if held:
            self._sink.append(Stream.TELEMETRY, held)
        if self._incidents is not None:
            self._incidents.close(self._clock_ms())

    @property
    def lingers(self) -> bool:
        """Whether :meth:`linger` has work: held records or statistics windows to close."""
        return self._shaper.timer_s is not None

    async def linger(self) -> None:
        """Close records that waited ``telemetry_linger_ms`` and statistics windows that
        ended while no poll came (needed only when :attr:`lingers`)."""
        while True:  # the period is read again each time: a reload may swap the shaper
            await asyncio.sleep(self._shaper.timer_s or 1.0)
            bodies = self._shaper.due(self._clock_ms())
            if bodies:
                self._sink.append(Stream.TELEMETRY, bodies)
