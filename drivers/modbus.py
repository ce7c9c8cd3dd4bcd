"""Modbus TCP and RTU devices: the only module of the drivers that touches sockets and ports.

``build_device(cfg, ...)`` does no I/O. The returned :class:`ModbusDevice` is an async context
manager; entering never fails because a device is down (connections are made lazily, by the
first poll, and remade by the next poll after a failure).

Contracts of :meth:`ModbusDevice.poll`:
- one sample per configured tag, ``tag = tag_index[tag.name]``, in the device's tag order;
- it never raises for communication problems: if the device cannot be reached or stops
  answering, every tag not yet read gets ``BAD_COMM`` (NaN) and the remaining requests of that
  poll are skipped, so a dead device costs one ``timeout_s`` per poll; an exception response
  gives ``BAD_DEVICE`` to the tags of that request only; decoding rules are in
  :mod:`drivers.codec`;
- ``ts_ms`` is taken when each request completed (or failed);
- ``online`` is False after a poll that could not reach the device (or was skipped by the
  breaker) and True after a poll that did (exception responses come from a reachable device);
- circuit breaker (:mod:`drivers.breaker`): after failed polls the next ones are skipped with no
  I/O (BAD_COMM samples) for 1, 3, 7... periods, capped by ``backoff_max_s``;
- an exception response 2 or 3 (illegal data address / value) to a request that covers more
  than one tag or a gap is split: each tag of it is read alone once, in the same poll. A tag the
  device refuses alone is read alone from then on (BAD_DEVICE); if every tag succeeded alone the
  gaps of that request are excluded from future block reads. The plan is remade at once, so
  the device costs its minimal request count again from the next poll on. Other exception codes
  (device busy, failure...) give BAD_DEVICE to that request's tags and change nothing.

Connections: one :class:`Link` (one pymodbus client, one lock) per TCP endpoint ``host:port``
— several unit ids behind one Modbus TCP gateway share it — and per serial port path (every
RTU device on the line), so requests on a link never overlap. After a
timeout the connection is closed and reopened by the next request: on TCP this drops late
replies that would be taken for the next answer; on RTU, reopening the port flushes it.
pymodbus' automatic reconnection is disabled (``reconnect_delay=0``) because reconnection is
driven by the poll schedule, which bounds its cost. pymodbus clients are built inside the running
event loop (they bind to it) and use ``retries=0``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np

from drivers.blockcodec import PollDecoder
from drivers.breaker import Breaker
from drivers.codec import decode_tag
from drivers.config import (
    ExcludeConfig,
    ModbusRtuDeviceConfig,
    ModbusTcpDeviceConfig,
    SerialPortConfig,
    TagConfig,
    WordOrder,
)
from drivers.errors import DeviceUnavailable, DriverConfigError, ProtocolError
from drivers.modbus_io import Link, execute, serial_link, tcp_link
from drivers.planner import AddressRange, PlannedPoint, ReadRequest, plan_reads
from drivers.types import Quality, SampleBatch

__all__ = [
    "ModbusDevice",
    "ProbeRead",
    "ProbeResult",
    "build_modbus_device",
    "wall_clock_ms",
]

_ISOLATE_CODES = frozenset({2, 3})  # the request itself is refused: find the address


def wall_clock_ms() -> int:
    """UTC epoch milliseconds (the default clock of devices)."""
    return time.time_ns() // 1_000_000


# -- probe results ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProbeRead:
    """Outcome of one planned request. ``rtt_ms`` is NaN when the request was not sent;
    ``data`` holds the registers (or bits as 0/1) read, empty unless ``ok``."""

    table: str
    address: int
    count: int
    tags: tuple[str, ...]
    ok: bool
    error: str
    rtt_ms: float
    data: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """Outcome of :meth:`ModbusDevice.probe`: could we connect, and how did each request fare."""

    device: str
    connected: bool
    error: str  # why the connection failed ("" when connected)
    reads: tuple[ProbeRead, ...]

    @property
    def ok(self) -> bool:
        return self.connected and all(r.ok for r in self.reads)


# -- the device -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Limits:
    """A device's planning limits (from its config)."""

    max_registers: int
    max_bits: int
    max_gap: int
    excluded: tuple[AddressRange, ...]


_ISOLATED = np.uint8(255)  # request status: its tags were read alone and are already set


@dataclass(frozen=True, slots=True)
class _Samples:
    """The arrays of one poll under construction (by tag position), and per request of the plan
    its reply (copied into the decoder's buffers), status (a Quality, or _ISOLATED) and time."""

    value: np.ndarray[Any, np.dtype[np.float64]]
    quality: np.ndarray[Any, np.dtype[np.uint8]]
    ts: np.ndarray[Any, np.dtype[np.int64]]
    registers: np.ndarray[Any, np.dtype[np.uint16]]
    bits: np.ndarray[Any, np.dtype[np.bool_]]
    status: np.ndarray[Any, np.dtype[np.uint8]]
    done_ms: np.ndarray[Any, np.dtype[np.int64]]

    @staticmethod
    def start(tags: int, decoder: PollDecoder, requests: int) -> _Samples:
        registers, bits = decoder.new_buffers()
        return _Samples(
            value=np.full(tags, np.nan, dtype=np.float64),
            quality=np.full(tags, Quality.BAD_COMM, dtype=np.uint8),
            ts=np.zeros(tags, dtype=np.int64),
            registers=registers,
            bits=bits,
            status=np.full(requests, Quality.BAD_COMM, dtype=np.uint8),
            done_ms=np.zeros(requests, dtype=np.int64),
        )

    def settle(self, decoder: PollDecoder) -> None:
        """Decode every answered request at once; BAD_DEVICE for refused ones."""
        status = self.status[decoder.point_request]
        ok = status == Quality.GOOD
        value, quality = decoder.decode(self.registers, self.bits)
        tags = decoder.point_tag[ok]
        self.value[tags], self.quality[tags] = value[ok], quality[ok]
        refused = status == Quality.BAD_DEVICE
        self.quality[decoder.point_tag[refused]] = Quality.BAD_DEVICE
        done = ok | refused
        self.ts[decoder.point_tag[done]] = self.done_ms[decoder.point_request[done]]

    def bad(self, points: Sequence[PlannedPoint], now: int) -> None:
        for p in points:
            self.value[p.tag], self.quality[p.tag], self.ts[p.tag] = np.nan, Quality.BAD_DEVICE, now


class ModbusDevice:
    """One Modbus unit (TCP, or RTU on a shared serial line). See the module contract."""

    def __init__(
        self,
        *,
        name: str,
        unit_id: int,
        poll_interval_s: float,
        timeout_s: float,
        byte_order: WordOrder,
        tags: Sequence[TagConfig],
        tag_ids: Sequence[int],
        limits: _Limits,
        link: Link,
        clock_ms: Callable[[], int],
        backoff_max_s: float = 60.0,
    ) -> None:
        self.name = name
        self.unit_id = unit_id
        self.poll_interval_s = poll_interval_s
        self.timeout_s = timeout_s
        self.byte_order: WordOrder = byte_order
        self.tags = tuple(tags)
        self.online = False
        self.breaker = Breaker(poll_interval_s=poll_interval_s, backoff_max_s=backoff_max_s)
        self.refused: list[AddressRange] = []  # gaps the device refused at run time
        self.alone: set[int] = set()  # tags (positions) the device refused in a block
        self._limits = limits
        self._tag_ids = np.asarray(tag_ids, dtype=np.int32)
        self._link = link
        self._clock_ms = clock_ms
        self.requests = self._plan()
        link.timeout_s = max(link.timeout_s, timeout_s)

    def __repr__(self) -> str:
        return f"<ModbusDevice {self.name} {self._link.key} unit {self.unit_id}>"

    @property
    def bus(self) -> str:
        """The physical link this device's requests travel on. Devices with the same ``bus``
        must be polled by one task, one request at a time (one owner per bus)."""
        return self._link.key

    async def __aenter__(self) -> ModbusDevice:
        self._link.enter()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._link.leave()

    @property
    def requests(self) -> tuple[ReadRequest, ...]:
        """The planned reads of one poll (assigning a plan compiles its decoder)."""
        return self._requests

    @requests.setter
    def requests(self, plan: Sequence[ReadRequest]) -> None:
        self._requests = tuple(plan)
        self._decoder = PollDecoder(self.tags, self._requests, self.byte_order)

    def _plan(self) -> tuple[ReadRequest, ...]:
        lim = self._limits
        return plan_reads(
            self.tags,
            max_registers=lim.max_registers,
            max_bits=lim.max_bits,
            max_gap=lim.max_gap,
            excluded=[*lim.excluded, *self.refused],
            alone=self.alone,
        )

    async def poll(self) -> SampleBatch:
        """Read every tag once (never raises for communication problems)."""
        requests, decoder = self._requests, self._decoder  # a re-plan applies from the next poll
        out = _Samples.start(len(self.tags), decoder, len(requests))
        reached = False
        if self.breaker.allow():
            async with self._link.owned():
                try:
                    client = await self._link.client(self.name, self.timeout_s)
                    reached = True
                    replan = False
                    for k, req in enumerate(requests):
                        replan |= await self._read(client, k, req, out)
                    if replan:
                        self.requests = self._plan()
                except DeviceUnavailable:
                    reached = False
                    self._link.reset()
            (self.breaker.succeeded if reached else self.breaker.failed)()
        out.settle(decoder)
        if not reached:
            out.ts[out.quality == Quality.BAD_COMM] = self._clock_ms()
        self.online = reached
        return SampleBatch(
            tag=self._tag_ids.copy(), ts_ms=out.ts, value=out.value, quality=out.quality
        )

    async def _read(self, client: Any, k: int, req: ReadRequest, out: _Samples) -> bool:
        """Planned request ``k`` into ``out``; True when the plan must be remade."""
        try:
            data = await execute(client, req, self.unit_id, self.name, self.timeout_s)
        except ProtocolError as exc:
            widths = sum(p.width for p in req.points)
            if exc.exception_code in _ISOLATE_CODES and (len(req.points) > 1 or req.count > widths):
                out.status[k] = _ISOLATED
                await self._isolate(client, req, out)
                return True
            out.status[k], out.done_ms[k] = Quality.BAD_DEVICE, self._clock_ms()
            return False
        # the plan (and its decoder) changes only after the last request of a poll
        (out.bits if req.is_bits else out.registers)[self._decoder.slice(k)] = data
        out.status[k], out.done_ms[k] = Quality.GOOD, self._clock_ms()
        return False

    async def _isolate(self, client: Any, req: ReadRequest, out: _Samples) -> None:
        """Read each tag of a refused block alone, once; remember what the device refused."""
        refused_alone = False
        for p in req.points:
            single = ReadRequest(
                req.table, req.address + p.offset, p.width, (PlannedPoint(p.tag, 0, p.width),)
            )
            try:
                data = await execute(client, single, self.unit_id, self.name, self.timeout_s)
            except ProtocolError:
                self.alone.add(p.tag)
                refused_alone = True
                out.bad(single.points, self._clock_ms())
                continue
            # the rare path: decoded alone by the scalar codec (same results as the block codec)
            value, quality = decode_tag(self.tags[p.tag], data, self.byte_order)
            out.value[p.tag], out.quality[p.tag], out.ts[p.tag] = value, quality, self._clock_ms()
        if not refused_alone:  # every tag reads alone: an address in a gap is refused
            covered = sorted((req.address + p.offset, req.address + p.offset + p.width)
                             for p in req.points)  # fmt: skip
            cursor = req.address
            for start, end in covered:
                if start > cursor:
                    self.refused.append((req.table, cursor, start))
                cursor = max(cursor, end)

    async def probe(self) -> ProbeResult:
        """Read-only check for commissioning: connect, then try each planned request once.

        Unlike :meth:`poll`, a request that times out does not stop the others (each costs at
        most ``timeout_s``); ``online`` is not changed.
        """
        async with self._link.owned():
            try:
                await self._link.client(self.name, self.timeout_s)
            except DeviceUnavailable as exc:
                self._link.reset()
                reads = tuple(
                    self._probe_read(r, f"not sent: {exc.reason}", math.nan) for r in self.requests
                )
                return ProbeResult(self.name, False, exc.reason, reads)
            results = []
            for req in self.requests:
                start = time.perf_counter()
                error = ""
                data: tuple[int, ...] = ()
                try:
                    client = await self._link.client(self.name, self.timeout_s)
                    got = await execute(client, req, self.unit_id, self.name, self.timeout_s)
                    data = tuple(int(v) for v in got)
                except ProtocolError as exc:
                    error = exc.reason
                except DeviceUnavailable as exc:
                    self._link.reset()
                    error = exc.reason
                rtt_ms = (time.perf_counter() - start) * 1000.0
                results.append(self._probe_read(req, error, rtt_ms, data))
            return ProbeResult(self.name, True, "", tuple(results))

    def _probe_read(
        self, req: ReadRequest, error: str, rtt_ms: float, data: tuple[int, ...] = ()
    ) -> ProbeRead:
        names = tuple(self.tags[p.tag].name for p in req.points)
        ok = not error
        return ProbeRead(req.table, req.address, req.count, names, ok, error, rtt_ms, data)


def _excluded(rules: Sequence[ExcludeConfig]) -> tuple[AddressRange, ...]:
    return tuple((r.table, r.address, r.address + r.count) for r in rules)


def build_modbus_device(
    cfg: ModbusTcpDeviceConfig | ModbusRtuDeviceConfig,
    *,
    tag_index: Mapping[str, int],
    serial_ports: Mapping[str, SerialPortConfig],
    clock_ms: Callable[[], int] = wall_clock_ms,
) -> ModbusDevice:
    """Build (no I/O) the device for ``cfg``.

    ``tag_index`` maps every tag name to its index in the agent's tag table; ``serial_ports``
    maps port names to their config (RTU only). Raises :class:`DriverConfigError` (permanent)
    for a tag missing from ``tag_index``, an unknown serial port, or tags that cannot be planned.
    """
    missing = [t.name for t in cfg.tags if t.name not in tag_index]
    if missing:
        raise DriverConfigError(f"device {cfg.name!r}: tags not in the tag table: {missing}")
    limits = _Limits(cfg.max_registers, cfg.max_bits, cfg.max_gap, _excluded(cfg.exclude))
    try:
        plan_reads(
            cfg.tags,
            max_registers=limits.max_registers,
            max_bits=limits.max_bits,
            max_gap=limits.max_gap,
        )
    except DriverConfigError as exc:
        raise DriverConfigError(f"device {cfg.name!r}: {exc}") from exc
    if isinstance(cfg, ModbusTcpDeviceConfig):
        link = tcp_link(cfg)
    else:
        port = serial_ports.get(cfg.serial_port)
        if port is None:
            raise DriverConfigError(
                f"device {cfg.name!r}: serial_port {cfg.serial_port!r} is not defined in "
                f"[[serial_ports]] (known: {sorted(serial_ports)})"
            )
        link = serial_link(port)
    return ModbusDevice(
        name=cfg.name,
        unit_id=cfg.unit_id,
        poll_interval_s=cfg.poll_interval_s,
        timeout_s=cfg.timeout_s,
        byte_order=cfg.byte_order,
        tags=cfg.tags,
        tag_ids=[tag_index[t.name] for t in cfg.tags],
        limits=limits,
        link=link,
        clock_ms=clock_ms,
        backoff_max_s=cfg.backoff_max_s,
    )
