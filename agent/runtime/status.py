"""The status snapshot: the facts ``safeedge status``, the ``health`` event, the Prometheus
endpoint, ``STATUS=`` and the local console show — one pure function over the runtime's parts.

:func:`snapshot` reads only what it is given (no I/O: the caller passes the store's stats it
read); :class:`RateMeter` is the one stateful helper (rates need two observations). Every
figure is a plain value in a msgspec struct, so the snapshot encodes to JSON as it is.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import msgspec

from agent.config.retention import days_held, project_telemetry
from agent.kernels import kernel_summary
from agent.runtime.alarmstate import OpenAlarm
from agent.runtime.build import Components
from agent.runtime.stats import RuntimeStats
from agent.uplink import Uplink
from buffer import StoreStats
from buffer.record import Stream
from drivers import Device

__all__ = [
    "AlarmStatus",
    "BufferStatus",
    "DeviceStatus",
    "RateMeter",
    "Rates",
    "StatusSnapshot",
    "StreamStatus",
    "UplinkStatus",
    "snapshot",
]

_MIB = 1024 * 1024
_DAY_S = 86_400


class DeviceStatus(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    driver: str
    state: str  # online | offline | unknown (not polled yet)
    polls: int = 0
    last_error: str | None = None  # the driver's text of the failure, else the bad quality
    last_error_reason: str | None = None  # its kind: timeout, refused, crc... (drivers.errors)
    last_error_ms: int | None = None
    requests_per_cycle: int | None = None  # Modbus reads per poll (None: not a polled bus)
    rtt_p50_ms: float | None = None
    rtt_p95_ms: float | None = None
    last_good_ms: int | None = None


class AlarmStatus(msgspec.Struct, frozen=True, kw_only=True):
    tag: str
    alarm: str
    level: int
    since_ms: int
    acked: bool
    alarm_id: str


class StreamStatus(msgspec.Struct, frozen=True, kw_only=True):
    undelivered: int  # backlog of a forwarded stream (0 for a local one: nothing to deliver)
    delivered: int
    bytes: int
    oldest_undelivered_ms: int | None
    evicted_total: int
    retention_days: float
    bytes_per_day: float | None  # measured this run (None until a minute of data)
    days_held: float | None  # what the stream's capacity holds at that rate
    forwarded: bool = True  # False: a local record (``incident``), never sent upstream
    local_records: int = 0  # records of a local stream kept now (they are never "undelivered")


class BufferStatus(msgspec.Struct, frozen=True, kw_only=True):
    bytes: int  # accounted bytes of retained records (what capacity bounds)
    capacity_bytes: int
    streams: dict[str, StreamStatus]
    warnings: list[str] = []
    file_bytes: int | None = None  # the database file with its WAL, on disk
    disk_free_bytes: int | None = None  # free space of the data directory's file system


class UplinkStatus(msgspec.Struct, frozen=True, kw_only=True):
    state: str  # disabled | connected | disconnected
    session: int | None = None
    last_error: str | None = None
    in_flight: int = 0
    delivered: int = 0
    drain_per_s: float | None = None  # records acknowledged per second, measured


class StatusSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    ts_ms: int
    agent: str
    site: str
    gateway: str
    config_hash: str
    uptime_s: float
    degraded: list[str]
    devices: list[DeviceStatus]
    alarms: list[AlarmStatus]
    buffer: BufferStatus | None
    uplink: UplinkStatus
    polls: int = 0
    samples: int = 0
    missed_deadlines: int = 0
    append_failures: int = 0
    kernels: str = ""  # "native" (no numba loaded) or "jit"
    kernels_reason: str = ""  # why the JIT runs (rules.native)


@dataclass(frozen=True, slots=True)
class Rates:
    bytes_per_day: Mapping[Stream, float]  # per stream; empty until measured
    delivered_per_s: float | None


class RateMeter:
    """Rates between the first observation and now (appended bytes per stream, deliveries)."""

    MIN_SPAN_S = 60.0

    def __init__(self) -> None:
        self._first: tuple[float, dict[Stream, tuple[int, int]], int] | None = None

    def observe(self, stats: StoreStats | None, delivered: int, now_s: float) -> Rates:
        if stats is None:
            return Rates({}, None)
        # appended bytes ~ retained bytes per record x records appended (seq advance)
        cur = {s: (st.last_seq, st.bytes, st.undelivered + st.delivered + st.dead)
               for s, st in stats.streams.items()}  # fmt: skip
        if self._first is None:
            self._first = (now_s, {s: (v[0], v[1]) for s, v in cur.items()}, delivered)
            return Rates({}, None)
        t0, seqs, delivered0 = self._first
        span = now_s - t0
        if span < self.MIN_SPAN_S:
            return Rates({}, None)
        out: dict[Stream, float] = {}
        for s, (seq, size, n) in cur.items():
            appended = seq - seqs.get(s, (seq, 0))[0]
            per_record = size / n if n else 0.0
            out[s] = appended * per_record * _DAY_S / span
        return Rates(out, (delivered - delivered0) / span)


def snapshot(
    *,
    components: Components,
    stats: RuntimeStats,
    alarms: Sequence[OpenAlarm],
    store_stats: StoreStats | None,
    uplink: Uplink | None,
    delivered: int,
    rates: Rates,
    degraded: Sequence[str],
    agent_version: str,
    now_ms: int,
    now_monotonic: float | None = None,
    disk: tuple[int, int] | None = None,
) -> StatusSnapshot:
    """The snapshot of the parts given; ``disk``: (database file bytes, free bytes), read by
    the caller (the only figures here that need a system call)."""
    c = components
    mono = time.monotonic() if now_monotonic is None else now_monotonic
    kernels = kernel_summary()
    return StatusSnapshot(
        ts_ms=now_ms,
        agent=agent_version,
        site=c.cfg.gateway.site,
        gateway=c.cfg.gateway.id,
        config_hash=c.config_hash,
        uptime_s=round(mono - stats.started_monotonic, 1),
        degraded=list(degraded),
        devices=[_device(d, stats, _driver(c, d.name)) for d in c.devices],
        alarms=[
            AlarmStatus(
                tag=a.tag,
                alarm=a.alarm,
                level=a.level,
                since_ms=a.since_ms,
                acked=a.acked,
                alarm_id=a.alarm_id,
            )
            for a in alarms
        ],  # fmt: skip
        buffer=None if store_stats is None else _buffer(c, store_stats, rates, disk),
        uplink=_uplink(uplink, delivered, rates),
        polls=stats.polls,
        samples=stats.samples,
        missed_deadlines=stats.missed_deadlines,
        append_failures=stats.append_failures,
        kernels=kernels.impl,
        kernels_reason=kernels.reason,
    )


def _driver(c: Components, name: str) -> str:
    """The config's ``driver`` of a device, or of the device a poll group ``{device}.{group}``
    belongs to (the longest configured name that ``name`` is or starts with)."""
    best = ""
    driver = "unknown"
    for cfg in c.cfg.devices:
        if (name == cfg.name or name.startswith(cfg.name + ".")) and len(cfg.name) > len(best):
            best, driver = cfg.name, str(type(cfg).__struct_config__.tag)
    return driver


def _device(d: Device, stats: RuntimeStats, driver: str) -> DeviceStatus:
    """From the driver's own account (``health()``, ``lost_reason``, ``last_error``: why it is
    offline) and the runtime's per-poll figures (round trips, last good read; once it is back,
    the driver's account of its last failure, unless a later poll had a bad quality)."""
    p = stats.devices.by_name.get(d.name)
    health = d.health()
    requests = health.get("requests")  # Modbus: reads per cycle; serial lines have none
    state = "unknown" if p is None else ("online" if d.online else "offline")
    error, reason, error_ms = None, None, None
    if d.lost_reason:
        error, reason = d.last_error or d.lost_reason, d.lost_reason
        lost_at = health.get("lost_at_ms")
        error_ms = lost_at if isinstance(lost_at, int) and lost_at > 0 else None
    elif (
        p is not None
        and p.last_failure is not None
        and (p.last_error_ms is None or p.last_failure[2] >= p.last_error_ms)
    ):  # back online: why it went down (the bad quality of that poll says less)
        reason, error, error_ms = p.last_failure
    elif p is not None and p.last_error is not None:
        error, reason, error_ms = p.last_error, p.last_error, p.last_error_ms
    return DeviceStatus(
        name=d.name,
        driver=driver,  # modbus_tcp, modbus_rtu, serial_line (the config's word for it)
        state=state,
        polls=0 if p is None else p.polls,
        last_error=error,
        last_error_reason=reason,
        last_error_ms=error_ms,
        requests_per_cycle=requests if isinstance(requests, int) else None,
        rtt_p50_ms=None if p is None else _round(p.percentile_ms(50)),
        rtt_p95_ms=None if p is None else _round(p.percentile_ms(95)),
        last_good_ms=None if p is None else p.last_good_ms,
    )


def _buffer(
    c: Components, st: StoreStats, rates: Rates, disk: tuple[int, int] | None
) -> BufferStatus:
    buf = c.cfg.buffer
    limits = buf.stream_limits()
    streams: dict[str, StreamStatus] = {}
    warnings: list[str] = []
    for s, ss in sorted(st.streams.items()):
        lim = limits.get(s)
        cap = st.capacity_bytes
        if lim is not None and lim.capacity_bytes is not None:
            cap = min(cap, lim.capacity_bytes)
        retention = (lim.retention_days if lim else None) or buf.retention_days
        per_day = rates.bytes_per_day.get(s)
        if per_day is None and s is Stream.TELEMETRY:
            per_day = project_telemetry(c.cfg).bytes_per_day  # until measured: the projection
        held = None if per_day is None else days_held(cap, per_day)
        if held is not None and held < retention and s is Stream.TELEMETRY:
            warnings.append(
                f"{s.wire_name}: capacity {cap / _MIB:.0f} MiB holds {held:.1f} days at "
                f"{(per_day or 0) / _MIB:.1f} MiB/day, less than retention {retention:g} days"
            )
        local = not s.forwarded  # its records are never leased: not a backlog to worry about
        streams[s.wire_name] = StreamStatus(
            undelivered=0 if local else ss.undelivered,
            delivered=ss.delivered,
            bytes=ss.bytes,
            oldest_undelivered_ms=None if local else ss.oldest_undelivered_ms,
            forwarded=not local,
            local_records=ss.undelivered if local else 0,
            evicted_total=ss.evicted,
            retention_days=retention,
            bytes_per_day=_round(per_day),
            days_held=None if held is None or math.isinf(held) else round(held, 1),
        )
    return BufferStatus(
        bytes=st.bytes,
        capacity_bytes=st.capacity_bytes,
        streams=streams,
        warnings=warnings,
        file_bytes=None if disk is None else disk[0],
        disk_free_bytes=None if disk is None else disk[1],
    )


def _uplink(uplink: Uplink | None, delivered: int, rates: Rates) -> UplinkStatus:
    if uplink is None:
        return UplinkStatus(state="disabled", delivered=delivered)
    return UplinkStatus(
        state="connected" if uplink.connected else "disconnected",
        session=uplink.session or None,
        last_error=uplink.last_error,
        in_flight=uplink.inflight,
        delivered=delivered,
        drain_per_s=_round(rates.delivered_per_s),
    )


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 2)
