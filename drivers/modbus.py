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
- ``online`` is False after a poll that could not reach the device and True after a poll that
  did (exception responses come from a reachable device).

Connections: each TCP device owns its connection. All RTU devices on one serial port share one
:class:`_Link` (one pymodbus client, one lock), so requests on a line never overlap. After a
timeout the connection is closed and reopened by the next request: on TCP this drops late
replies that would be taken for the next answer; on RTU, reopening the port flushes it.
pymodbus' automatic reconnection is disabled (``reconnect_delay=0``) because reconnection is
driven by the poll schedule, which bounds its cost. pymodbus clients are built inside the running
event loop (they bind to it) and use ``retries=0``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerType

from drivers.codec import decode_tag
from drivers.config import (
    ModbusRtuDeviceConfig,
    ModbusTcpDeviceConfig,
    SerialPortConfig,
    TagConfig,
    WordOrder,
)
from drivers.errors import DeviceUnavailable, DriverConfigError, ProtocolError
from drivers.planner import ReadRequest, plan_reads
from drivers.types import Quality, SampleBatch

__all__ = ["ModbusDevice", "ProbeRead", "ProbeResult", "build_device", "wall_clock_ms"]

_EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    5: "acknowledge",
    6: "device busy",
    7: "negative acknowledge",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}


def wall_clock_ms() -> int:
    """UTC epoch milliseconds (the default clock of devices)."""
    return time.time_ns() // 1_000_000


# -- the one place where pymodbus' failures become ours ---------------------------------------


@contextlib.contextmanager
def _translated(device: str, what: str, timeout_s: float) -> Iterator[None]:
    """Translate every failure of a pymodbus call into the drivers' exceptions (chained)."""
    try:
        yield
    except TimeoutError as exc:  # our own bound (asyncio.timeout) or pymodbus' wait_for
        raise DeviceUnavailable(device, f"{what}: no answer within {timeout_s:g} s") from exc
    except (ConnectionException, ModbusIOException, OSError) as exc:
        raise DeviceUnavailable(device, f"{what}: {exc}") from exc
    except ValueError as exc:  # raised before sending: the request itself is impossible
        raise DriverConfigError(f"device {device!r}: {what}: {exc}") from exc
    except ModbusException as exc:
        raise ProtocolError(device, f"{what}: {exc}") from exc


async def _connect(client: Any, device: str, timeout_s: float) -> None:
    with _translated(device, "connect", timeout_s):
        async with asyncio.timeout(timeout_s):
            ok = await client.connect()
        if not ok:
            raise ConnectionException("connection failed")


async def _execute(
    client: Any, req: ReadRequest, unit_id: int, device: str, timeout_s: float
) -> list[int] | list[bool]:
    """Run one planned read; the data has exactly ``req.count`` items."""
    read = {
        "holding": client.read_holding_registers,
        "input": client.read_input_registers,
        "coil": client.read_coils,
        "discrete": client.read_discrete_inputs,
    }[req.table]
    what = f"read {req.table} {req.address}+{req.count}"
    with _translated(device, what, timeout_s):
        async with asyncio.timeout(timeout_s):
            rr = await read(req.address, count=req.count, device_id=unit_id)
    if rr.isError():
        code = int(getattr(rr, "exception_code", 0) or 0)
        name = _EXCEPTION_NAMES.get(code, "unknown")
        raise ProtocolError(
            device, f"{what}: exception response {code} ({name})", exception_code=code
        )
    data: list[int] | list[bool] = list(rr.bits if req.is_bits else rr.registers)
    if len(data) < req.count:
        raise ProtocolError(device, f"{what}: short reply ({len(data)} items)")
    return data[: req.count]


# -- connections ------------------------------------------------------------------------------


class _Link:
    """One connection (a TCP endpoint, or a serial line shared by its devices).

    The pymodbus client and the lock are created inside the running loop on first use and
    dropped when the last user leaves, so a link can serve successive event loops (tests).
    """

    def __init__(self, key: str, factory: Callable[[float], Any], *, owner: object = None) -> None:
        self.key = key
        self.owner = owner  # the config this link was made for
        self._factory = factory
        self.timeout_s = 0.0  # the client's own timeout: the longest of its devices'
        self._client: Any = None
        self._lock: asyncio.Lock | None = None
        self._users = 0

    @property
    def in_use(self) -> bool:
        return self._users > 0

    def enter(self) -> None:
        self._users += 1

    def leave(self) -> None:
        self._users = max(0, self._users - 1)
        if self._users == 0:
            self.reset()
            self._client = None
            self._lock = None

    @contextlib.asynccontextmanager
    async def owned(self) -> AsyncIterator[None]:
        """Exclusive use of the connection (one request stream per bus)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            yield

    async def client(self, device: str, timeout_s: float) -> Any:
        """The connected client; connects first if needed (raises DeviceUnavailable)."""
        if self._client is None:
            self._client = self._factory(self.timeout_s)
        if not self._client.connected:
            await _connect(self._client, device, timeout_s)
        return self._client

    def reset(self) -> None:
        """Close the connection; the next :meth:`client` reconnects."""
        if self._client is not None:
            self._client.close()


_SERIAL_LINKS: dict[str, _Link] = {}  # by port path: one owner per physical line


def _tcp_link(cfg: ModbusTcpDeviceConfig) -> _Link:
    def factory(timeout_s: float) -> Any:
        return AsyncModbusTcpClient(
            cfg.host,
            port=cfg.port,
            name=cfg.name,
            timeout=timeout_s,
            retries=0,
            reconnect_delay=0,
            reconnect_delay_max=0,
        )

    return _Link(f"tcp:{cfg.host}:{cfg.port}/{cfg.name}", factory)


def _serial_link(port: SerialPortConfig) -> _Link:
    link = _SERIAL_LINKS.get(port.path)
    if link is not None and link.owner == port:
        return link
    if link is not None and link.in_use:
        raise DriverConfigError(
            f"serial port {port.path!r} is already open with other settings ({link.owner}); "
            "one physical line has one configuration"
        )

    def factory(timeout_s: float) -> Any:
        return AsyncModbusSerialClient(
            port.path,
            framer=FramerType.RTU,
            baudrate=port.baudrate,
            bytesize=port.bytesize,
            parity=port.parity,
            stopbits=port.stopbits,
            name=port.name,
            timeout=timeout_s,
            retries=0,
            reconnect_delay=0,
            reconnect_delay_max=0,
        )

    link = _SERIAL_LINKS[port.path] = _Link(f"serial:{port.path}", factory, owner=port)
    return link


# -- probe results ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProbeRead:
    """Outcome of one planned request. ``rtt_ms`` is NaN when the request was not sent."""

    table: str
    address: int
    count: int
    tags: tuple[str, ...]
    ok: bool
    error: str
    rtt_ms: float


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
        plan: Sequence[ReadRequest],
        link: _Link,
        clock_ms: Callable[[], int],
    ) -> None:
        self.name = name
        self.unit_id = unit_id
        self.poll_interval_s = poll_interval_s
        self.timeout_s = timeout_s
        self.byte_order: WordOrder = byte_order
        self.tags = tuple(tags)
        self.requests = tuple(plan)
        self.online = False
        self._tag_ids = np.asarray(tag_ids, dtype=np.int32)
        self._link = link
        self._clock_ms = clock_ms
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

    async def poll(self) -> SampleBatch:
        """Read every tag once (never raises for communication problems)."""
        n = len(self.tags)
        value = np.full(n, np.nan, dtype=np.float64)
        quality = np.full(n, Quality.BAD_COMM, dtype=np.uint8)
        ts = np.zeros(n, dtype=np.int64)
        reached = False
        async with self._link.owned():
            try:
                client = await self._link.client(self.name, self.timeout_s)
                reached = True
                for req in self.requests:
                    try:
                        data = await _execute(client, req, self.unit_id, self.name, self.timeout_s)
                    except ProtocolError:
                        for p in req.points:
                            quality[p.tag] = Quality.BAD_DEVICE
                            ts[p.tag] = self._clock_ms()
                        continue
                    now = self._clock_ms()
                    for p in req.points:
                        tag = self.tags[p.tag]
                        v, q = decode_tag(tag, data[p.offset : p.offset + p.width], self.byte_order)
                        value[p.tag], quality[p.tag], ts[p.tag] = v, q, now
            except DeviceUnavailable:
                reached = False
                self._link.reset()
        if not reached:
            ts[quality == Quality.BAD_COMM] = self._clock_ms()
        self.online = reached
        return SampleBatch(tag=self._tag_ids.copy(), ts_ms=ts, value=value, quality=quality)

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
                try:
                    client = await self._link.client(self.name, self.timeout_s)
                    await _execute(client, req, self.unit_id, self.name, self.timeout_s)
                except ProtocolError as exc:
                    error = exc.reason
                except DeviceUnavailable as exc:
                    self._link.reset()
                    error = exc.reason
                rtt_ms = (time.perf_counter() - start) * 1000.0
                results.append(self._probe_read(req, error, rtt_ms))
            return ProbeResult(self.name, True, "", tuple(results))

    def _probe_read(self, req: ReadRequest, error: str, rtt_ms: float) -> ProbeRead:
        names = tuple(self.tags[p.tag].name for p in req.points)
        ok = not error
        return ProbeRead(req.table, req.address, req.count, names, ok, error, rtt_ms)


def build_device(
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
    try:
        plan = plan_reads(cfg.tags, max_registers=cfg.max_registers, max_gap=cfg.max_gap)
    except DriverConfigError as exc:
        raise DriverConfigError(f"device {cfg.name!r}: {exc}") from exc
    if isinstance(cfg, ModbusTcpDeviceConfig):
        link = _tcp_link(cfg)
    else:
        port = serial_ports.get(cfg.serial_port)
        if port is None:
            raise DriverConfigError(
                f"device {cfg.name!r}: serial_port {cfg.serial_port!r} is not defined in "
                f"[[serial_ports]] (known: {sorted(serial_ports)})"
            )
        link = _serial_link(port)
    return ModbusDevice(
        name=cfg.name,
        unit_id=cfg.unit_id,
        poll_interval_s=cfg.poll_interval_s,
        timeout_s=cfg.timeout_s,
        byte_order=cfg.byte_order,
        tags=cfg.tags,
        tag_ids=[tag_index[t.name] for t in cfg.tags],
        plan=plan,
        link=link,
        clock_ms=clock_ms,
    )
