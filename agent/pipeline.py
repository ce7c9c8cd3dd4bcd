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
import numpy as np

from agent import __version__
from agent.alarm_ids import AlarmIds
from agent.codec import alarm_body, event_body
from agent.commands import (
    AckAlarmArgs,
    CommandProcessor,
    CommandRejectedError,
    ReplayStore,
    ResendArgs,
    load_public_keys,
)
from agent.config import AgentConfig, ResolvedPaths
from agent.forwarder import Forwarder
from agent.logs import RateLimiter, kv
from agent.notify import notify, watchdog_interval_s
from agent.tags import TagTable, config_hash
from agent.telemetry import ExceptionFilter, TelemetryBatcher
from agent.uplink import Uplink
from buffer import BufferError as StoreError
from buffer import Store
from buffer.record import Stream
from drivers import Device, Quality, SampleBatch, build_devices
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


async def _cancel_and_wait(tasks: Sequence[asyncio.Task[Any]], timeout_s: float = 10.0) -> None:
    """Cancel ``tasks`` and wait until they are done, cancelling again while they run.

    Python 3.11's ``asyncio.wait_for`` can swallow a cancellation that races with its inner
    future completing (bpo-42130; pymodbus and the drivers use it on every request), so a single
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
        self._buses: dict[str, list[Device]] = {}
        for dev_cfg in cfg.devices:
            for device in build_devices(  # one per poll group
                dev_cfg, tag_index=self.tags.index, serial_ports=serial_ports, clock_ms=clock_ms
            ):
                self._buses.setdefault(device.bus, []).append(device)
        self._online: dict[str, bool] = {}
        self._alarm_ids = AlarmIds(cfg.gateway.id)
        up = cfg.uplink
        self._batcher = TelemetryBatcher(
            max_points=up.telemetry_batch,
            max_bytes=up.telemetry_max_bytes,
            linger_ms=up.telemetry_linger_ms,
        )
        self._rbe: ExceptionFilter | None = None
        if up.report_by_exception is not None:
            rbe = up.report_by_exception
            bands = np.array([rbe.deadbands.get(n, rbe.deadband) for n in self.tags.names])
            self._rbe = ExceptionFilter(bands, int(rbe.integrity_s * 1000))
        self.uplink: Uplink | None = None
        if cfg.uplink.enabled:
            self.uplink = Uplink(
                config=cfg.uplink,
                site=cfg.gateway.site,
                gateway=cfg.gateway.id,
                agent_version=__version__,
                password=password,
                clock_ms=clock_ms,
                on_command=self._on_command if cfg.commands.enabled else None,
                on_results=self._on_uplink_results,
            )
        self.commands: CommandProcessor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.store: Store | None = None
        self.forwarder: Forwarder | None = None
        self.stats = PipelineStats()
        self._log_limit = RateLimiter(60.0)
        self.ready = asyncio.Event()
        self._stopping = False

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Warm up, open, connect, report ready, run until ``stop``; then flush and close."""
        loop = asyncio.get_running_loop()
        self._loop = loop
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
                        drain_rate=self.cfg.uplink.drain_rate,
                    )
                    self.uplink.set_meta(self._meta())
                    if self.cfg.commands.enabled:
                        self.commands = self._command_processor()
                    self.uplink.start()
                else:
                    log.warning(kv("uplink_disabled", note="records are kept in the buffer"))
                self._append_event("started", agent=__version__, config_hash=config_hash(self.cfg))
                await self._serve(stop)
        finally:
            if self.uplink is not None:
                await self.uplink.stop()
                self._settle_late_results()
            self.store.close()
            log.info(kv("stopped", **self._summary()))

    async def _serve(self, stop: asyncio.Event) -> None:
        polls = [
            asyncio.create_task(self._poll_bus(name, bus), name=f"poll {name}")
            for name, bus in self._buses.items()
        ]
        helpers = [asyncio.create_task(self._maintain(), name="maintain")]
        if self._batcher.linger_ms > 0:
            helpers.append(asyncio.create_task(self._linger(), name="linger"))
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
        self._stopping = True
        await _cancel_and_wait([*polls, *helpers])
        held = self._batcher.flush()
        if held:
            self._append(Stream.TELEMETRY, held)
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
            capacity_bytes=buf.capacity_bytes,
            stream_limits=buf.stream_limits(),
            reserve_bytes=buf.reserve_bytes,
            clock_ms=self._clock_ms,
        )
        if store.recovered_from is not None:
            log.error(kv("buffer_corrupt", moved_to=store.recovered_from))
            self.store = store
            self._append_event("buffer_corrupt", moved_to=str(store.recovered_from))
        return store

    # -- polling ---------------------------------------------------------------------------

    async def _poll_bus(self, name: str, devices: Sequence[Device]) -> None:
        """Poll every device of one bus at its own period, one request stream at a time."""
        loop = asyncio.get_running_loop()
        due = {d.name: loop.time() for d in devices}
        while not self._stopping:
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

    def _on_batch(self, device: Device, batch: SampleBatch) -> None:
        self.stats.polls += 1
        self.stats.samples += len(batch)
        self.stats.last_poll_monotonic = time.monotonic()
        self._track_device(device, batch)
        if not len(batch):  # e.g. a serial-line device with no new frame this period
            return
        events = self.engine.evaluate(batch.tag, batch.ts_ms, batch.value, batch.quality)
        if events:
            self.stats.alarms += len(events)
            self._append(Stream.ALARM, [self._encode_alarm(e) for e in events])
        self._append_telemetry(batch)

    def _track_device(self, device: Device, batch: SampleBatch) -> None:
        was = self._online.get(device.name)
        now = device.online
        if was is None and not now and not len(batch):
            return  # nothing known yet (a push device before its first period): not "lost"
        if was == now or (was is None and now):
            self._online[device.name] = now
            return
        self._online[device.name] = now
        kind = "device_restored" if now else "device_lost"
        ts = int(batch.ts_ms[0]) if len(batch) else self._clock_ms()
        (log.info if now else log.warning)(kv(kind, device=device.name))
        self._append_event(kind, device=device.name, at_ms=ts)

    def _append_telemetry(self, batch: SampleBatch) -> None:
        tag, ts, value, quality = batch.tag, batch.ts_ms, batch.value, batch.quality
        if self._rbe is not None:
            keep = self._rbe.select(tag, ts, value, quality)
            tag, ts, value, quality = tag[keep], ts[keep], value[keep], quality[keep]
        names = self.tags.names
        points = [
            (names[t], s, v if not math.isnan(v) else None, _QUALITY_NAMES[q] if q else None)
            for t, s, v, q in zip(
                tag.tolist(), ts.tolist(), value.tolist(), quality.tolist(), strict=True
            )
        ]
        bodies = self._batcher.add(points, self._clock_ms())
        if bodies:
            self._append(Stream.TELEMETRY, bodies)

    async def _linger(self) -> None:
        """Close telemetry records that waited ``telemetry_linger_ms`` (only when > 0)."""
        period = max(self._batcher.linger_ms / 4000, 0.005)
        while True:
            await asyncio.sleep(period)
            bodies = self._batcher.due(self._clock_ms())
            if bodies:
                self._append(Stream.TELEMETRY, bodies)

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
        if self.forwarder is not None:
            self.forwarder.wake()

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
        self.forwarder.wake()  # whatever the buffer held at start
        await self.forwarder.run()

    # -- commands (design/UPLINK.md; verification in agent/commands.py) ----------------------

    def _command_processor(self) -> CommandProcessor:
        replay = ReplayStore(
            self.paths.data_dir / "commands_seen.json",
            max_ids=self.cfg.commands.seen_ids_max,
            clock_ms=self._clock_ms,
        )
        return CommandProcessor(
            gateway=self.cfg.gateway.id,
            trusted_keys=load_public_keys(self.cfg.commands.trusted_keys),
            replay=replay,
            handlers=_CommandActions(self),
            clock_ms=self._clock_ms,
        )

    def _on_uplink_results(self) -> None:
        """PUBACKs arrived or a session started (loop thread): wake the forwarder."""
        if self.forwarder is not None:
            self.forwarder.wake()

    def _on_command(self, raw: bytes) -> None:
        """Inside paho's read (loop thread): handle the command outside that callback."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._handle_command, raw)

    def _handle_command(self, raw: bytes) -> None:
        if self.commands is None or self.uplink is None:
            return  # arrived before the processor exists or after shutdown began
        result = self.commands.handle(raw)
        self.uplink.publish_untracked("cmd/result", result.payload())

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


class _CommandActions:
    """What verified commands do to the running pipeline (loop thread only)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._p = pipeline

    def ack_alarm(self, args: AckAlarmArgs) -> str:
        p = self._p
        index = p.tags.index.get(args.tag)
        if index is None:
            raise CommandRejectedError("bad_args", f"ack_alarm: unknown tag {args.tag!r}")
        events = p.engine.acknowledge(index, p._clock_ms(), args.alarm)
        who = {k: v for k, v in (("user", args.user), ("comment", args.comment)) if v is not None}
        for event in events:
            event.extra.update(who)
        if events:
            p.stats.alarms += len(events)
            p._append(Stream.ALARM, [p._encode_alarm(e) for e in events])
        done = ", ".join(f"{e.alarm} {e.event}" for e in events) or "nothing to acknowledge"
        return f"{args.tag}: {done}"

    def rebirth(self) -> str:
        uplink = self._p.uplink
        assert uplink is not None
        return "state and meta republished" if uplink.rebirth() else "not connected"

    def resend(self, args: ResendArgs) -> str:
        p = self._p
        assert p.store is not None
        assert p.forwarder is not None
        limit = p.cfg.commands.max_resend
        if args.to_seq - args.from_seq + 1 > limit:
            raise CommandRejectedError(
                "bad_args", f"resend: at most {limit} records per command ([commands].max_resend)"
            )
        stream = Stream[args.stream.upper()]
        records = p.store.resend(stream, args.from_seq, args.to_seq)
        p.forwarder.resend(records)
        return f"{len(records)} {args.stream} records queued for resend"
