"""The only place where the leaves meet: drivers → rules → buffer → uplink.

Per poll of a device::

    driver.poll() → SampleBatch → RuleEngine.evaluate() → [AlarmEvent]
        → alarm records, then one telemetry record → Store.append()     (durability point)
    forwarder: Store.lease() → Uplink.publish(QoS 1) → PUBACK → Store.settle()

Invariants:
- alarms are evaluated on every sample whether the uplink is up or not; a poll's alarm records
  are appended before its telemetry record;
- one task per bus: TCP devices each own their connection, all devices on one serial port share
  one task, so requests on a serial line never overlap;
- a missed poll deadline is counted and skipped, never queued behind the late one;
- the store is touched only from the event loop thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import msgspec

from agent import __version__
from agent.alarm_ids import AlarmIds
from agent.codec import alarm_body, event_body, telemetry_body
from agent.config import AgentConfig, ResolvedPaths
from agent.forwarder import Forwarder
from agent.logs import RateLimiter, kv
from agent.notify import notify, watchdog_interval_s
from agent.tags import TagTable, config_hash
from agent.uplink import Uplink
from buffer import BufferError as StoreError
from buffer import Store
from buffer.record import Stream
from drivers import ModbusDevice, Quality, SampleBatch, build_device
from rules import RuleEngine
from rules.events import AlarmEvent

__all__ = ["Pipeline", "PipelineStats", "wall_clock_ms"]

log = logging.getLogger("safeedge.pipeline")

_QUALITY_NAMES = {int(q): q.wire_name for q in Quality}
_FORWARD_IDLE_S = 0.02
_MAINTAIN_EVERY_S = 60.0


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class PipelineStats:
    polls: int = 0
    samples: int = 0
    alarms: int = 0
    missed_deadlines: int = 0
    append_failures: int = 0
    last_poll_monotonic: float = field(default_factory=time.monotonic)


class Pipeline:
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
        self.cfg = cfg
        self.paths = paths
        self._clock_ms = clock_ms
        self._flush_timeout_s = flush_timeout_s
        self.tags = TagTable(cfg)
        self.engine = RuleEngine(self.tags.names, cfg.rules)
        serial_ports = {p.name: p for p in cfg.serial_ports}
        self._buses: dict[str, list[ModbusDevice]] = {}
        for dev_cfg in cfg.devices:
            device = build_device(
                dev_cfg, tag_index=self.tags.index, serial_ports=serial_ports, clock_ms=clock_ms
            )
            self._buses.setdefault(device.bus, []).append(device)
        self._online: dict[str, bool] = {}
        self._alarm_ids = AlarmIds(cfg.gateway.id)
        self.uplink: Uplink | None = None
        if cfg.uplink.enabled:
            self.uplink = Uplink(
                config=cfg.uplink,
                site=cfg.gateway.site,
                gateway=cfg.gateway.id,
                agent_version=__version__,
                password=password,
                clock_ms=clock_ms,
            )
        self.store: Store | None = None
        self.forwarder: Forwarder | None = None
        self.stats = PipelineStats()
        self._wake = asyncio.Event()
        self._log_limit = RateLimiter(60.0)
        self.ready = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Warm up, open, connect, report ready, run until ``stop``; then flush and close."""
        loop = asyncio.get_running_loop()
        t0 = time.monotonic()
        await loop.run_in_executor(None, self.engine.warm_up)
        log.info(kv("rules_ready", tags=len(self.tags), seconds=f"{time.monotonic() - t0:.2f}"))
        self.store = self._open_store()
        try:
            async with AsyncExitStack() as stack:
                for bus in self._buses.values():
                    for device in bus:
                        await stack.enter_async_context(device)
                if self.uplink is not None:
                    self.forwarder = Forwarder(
                        store=self.store,
                        uplink=self.uplink,
                        site=self.cfg.gateway.site,
                        gateway=self.cfg.gateway.id,
                        backfill_after_s=self.cfg.uplink.backfill_after_s,
                        max_inflight=self.cfg.uplink.max_inflight,
                        clock_ms=self._clock_ms,
                    )
                    self.uplink.set_meta(self._meta())
                    self.uplink.start()
                else:
                    log.warning(kv("uplink_disabled", note="records are kept in the buffer"))
                self._append_event("started", agent=__version__, config_hash=config_hash(self.cfg))
                await self._serve(stop)
        finally:
            if self.uplink is not None:
                await loop.run_in_executor(None, self.uplink.stop)
                self._settle_late_results()
            self.store.close()
            log.info(kv("stopped", **self._summary()))

    async def _serve(self, stop: asyncio.Event) -> None:
        polls = [
            asyncio.create_task(self._poll_bus(name, bus), name=f"poll {name}")
            for name, bus in self._buses.items()
        ]
        helpers = [asyncio.create_task(self._maintain(), name="maintain")]
        forward = None
        if self.forwarder is not None:
            forward = asyncio.create_task(self._forward(), name="forward")
        interval = watchdog_interval_s()
        if interval is not None:
            helpers.append(asyncio.create_task(self._watchdog(interval), name="watchdog"))
        self.ready.set()
        notify("READY=1")
        devices = sum(len(bus) for bus in self._buses.values())
        log.info(kv("ready", devices=devices, tags=len(self.tags)))
        stopper: asyncio.Task[Any] = asyncio.create_task(stop.wait())
        everything: list[asyncio.Task[Any]] = [*polls, *helpers, stopper]
        if forward is not None:
            everything.append(forward)
        done, _ = await asyncio.wait(everything, return_when=asyncio.FIRST_COMPLETED)
        notify("STOPPING=1")
        for task in [*polls, *helpers]:
            task.cancel()
        await asyncio.gather(*polls, *helpers, return_exceptions=True)
        for task in done:
            if task is not stopper:  # these loops run forever: ending at all is a failure
                if forward is not None and task is not forward:
                    forward.cancel()
                raise RuntimeError(f"pipeline task {task.get_name()!r} ended") from (
                    task.exception() if not task.cancelled() else None
                )
        if forward is not None:
            await self._flush(forward)

    async def _flush(self, forward: asyncio.Task[None]) -> None:
        """Give in-flight and pending records a bounded chance to be delivered before exit."""
        assert self.forwarder is not None
        deadline = time.monotonic() + self._flush_timeout_s
        while time.monotonic() < deadline and self.uplink is not None and self.uplink.connected:
            if self.forwarder.idle and not self._has_undelivered():
                break
            await asyncio.sleep(_FORWARD_IDLE_S)
        forward.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await forward

    def _has_undelivered(self) -> bool:
        assert self.store is not None
        return any(s.undelivered for s in self.store.stats().streams.values())

    def _settle_late_results(self) -> None:
        if self.forwarder is not None:
            self.forwarder.settle_results()

    def _open_store(self) -> Store:
        buf = self.cfg.buffer
        store = Store.open(
            path=self.paths.buffer_path,
            key_file=self.paths.buffer_key_file,
            gateway_id=self.cfg.gateway.id,
            cipher=buf.cipher,
            retention_days=buf.retention_days,
            capacity_bytes=int(buf.capacity_mb * 1024 * 1024),
            clock_ms=self._clock_ms,
        )
        if store.recovered_from is not None:
            log.error(kv("buffer_corrupt", moved_to=store.recovered_from))
            self.store = store
            self._append_event("buffer_corrupt", moved_to=str(store.recovered_from))
        return store

    # -- polling ---------------------------------------------------------------------------

    async def _poll_bus(self, name: str, devices: Sequence[ModbusDevice]) -> None:
        """Poll every device of one bus at its own period, one request stream at a time."""
        loop = asyncio.get_running_loop()
        due = {d.name: loop.time() for d in devices}
        while True:
            device = min(devices, key=lambda d: due[d.name])
            delay = due[device.name] - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            batch = await device.poll()
            self._on_batch(device, batch)
            period = device.poll_interval_s
            nxt = due[device.name] + period
            now = loop.time()
            if now > nxt:  # late: skip the missed slots instead of bursting to catch up
                missed = math.floor((now - nxt) / period) + 1
                self.stats.missed_deadlines += missed
                nxt += missed * period
            due[device.name] = nxt

    def _on_batch(self, device: ModbusDevice, batch: SampleBatch) -> None:
        self.stats.polls += 1
        self.stats.samples += len(batch)
        self.stats.last_poll_monotonic = time.monotonic()
        self._track_device(device, batch)
        events = self.engine.evaluate(batch.tag, batch.ts_ms, batch.value, batch.quality)
        if events:
            self.stats.alarms += len(events)
            self._append(Stream.ALARM, [self._encode_alarm(e) for e in events])
        if len(batch):
            self._append(Stream.TELEMETRY, [self._encode_points(batch)])

    def _track_device(self, device: ModbusDevice, batch: SampleBatch) -> None:
        was = self._online.get(device.name)
        now = device.online
        if was == now or (was is None and now):
            self._online[device.name] = now
            return
        self._online[device.name] = now
        kind = "device_restored" if now else "device_lost"
        ts = int(batch.ts_ms[0]) if len(batch) else self._clock_ms()
        (log.info if now else log.warning)(kv(kind, device=device.name))
        self._append_event(kind, device=device.name, at_ms=ts)

    def _encode_points(self, batch: SampleBatch) -> bytes:
        names = self.tags.names
        values = batch.value.tolist()
        points = [
            (
                names[t],
                ts,
                v if not math.isnan(v) else None,
                _QUALITY_NAMES[q] if q else None,
            )
            for t, ts, v, q in zip(
                batch.tag.tolist(),
                batch.ts_ms.tolist(),
                values,
                batch.quality.tolist(),
                strict=True,
            )
        ]
        return telemetry_body(points)

    def _encode_alarm(self, event: AlarmEvent) -> bytes:
        tag = self.tags[event.tag]
        alarm_id = self._alarm_ids.for_event(tag.name, event.alarm, event.event, event.ts_ms)
        log.info(kv("alarm", tag=tag.name, alarm=event.alarm, event=event.event, level=event.level))
        return alarm_body(
            tag=tag.name,
            alarm=event.alarm,
            event=event.event,
            level=event.level,
            value=event.value,
            ts_ms=event.ts_ms,
            alarm_id=alarm_id,
            extra=event.extra,
        )

    # -- buffer ------------------------------------------------------------------------------

    def _append(self, stream: Stream, payloads: list[bytes]) -> None:
        assert self.store is not None
        try:
            self.store.append(stream, payloads)
        except StoreError as exc:
            # Counted always; logged once a minute per stream (a full disk fails every poll).
            self.stats.append_failures += len(payloads)
            allowed, suppressed = self._log_limit.allow(f"append:{stream.wire_name}")
            if allowed:
                log.error(  # noqa: TRY400 - one structured line, not a traceback per poll
                    kv(
                        "append_failed",
                        stream=stream.wire_name,
                        error=exc,
                        failed_total=self.stats.append_failures,
                        suppressed=suppressed,
                    )
                )
            return
        self._wake.set()

    def _append_event(self, kind: str, **fields: object) -> None:
        self._append(Stream.EVENT, [event_body(kind, self._clock_ms(), fields)])

    async def _maintain(self) -> None:
        assert self.store is not None
        while True:
            await asyncio.sleep(_MAINTAIN_EVERY_S)
            self.store.maintain()
            for ev in self.store.take_evictions():
                self._append_event(
                    "buffer_evicted",
                    stream=ev.stream.wire_name,
                    count=ev.count,
                    first_ts=ev.first_ts,
                    last_ts=ev.last_ts,
                )

    # -- uplink ------------------------------------------------------------------------------

    async def _forward(self) -> None:
        assert self.forwarder is not None
        while True:
            if self.forwarder.pump() == 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), _FORWARD_IDLE_S)
            else:
                await asyncio.sleep(0)

    async def _watchdog(self, interval: float) -> None:
        """Pet systemd's watchdog only while polling makes progress."""
        slowest = max((d.poll_interval_s for b in self._buses.values() for d in b), default=1.0)
        while True:
            await asyncio.sleep(interval)
            if time.monotonic() - self.stats.last_poll_monotonic < 3 * slowest + interval:
                notify("WATCHDOG=1")

    def _meta(self) -> bytes:
        tags = []
        for tag in self.tags:
            tags.append(
                {
                    "name": tag.name,
                    "device": tag.device,
                    "unit": tag.unit,
                    "range": list(tag.range) if tag.range else None,
                    "rules": self.engine.params(tag.index),
                }
            )
        devices = [
            {"name": d.name, "driver": type(d).__name__, "poll_interval_s": d.poll_interval_s}
            for b in self._buses.values()
            for d in b
        ]
        return msgspec.json.encode(
            {
                "v": 1,
                "ts": self._clock_ms(),
                "agent": __version__,
                "config_hash": config_hash(self.cfg),
                "devices": devices,
                "tags": tags,
            }
        )

    def _summary(self) -> dict[str, object]:
        out: dict[str, object] = {
            "polls": self.stats.polls,
            "samples": self.stats.samples,
            "alarms": self.stats.alarms,
            "missed": self.stats.missed_deadlines,
        }
        if self.forwarder is not None:
            out["delivered"] = self.forwarder.stats.delivered
        return out
