"""The installer's scan links: pymodbus clients for ``safeedge scan`` and nothing else.

The running agent reads devices through its own client (drivers/mblink.py, drivers/mbchannel.py:
its own framing, every reply checked against its request). Scanning an unknown bus is an
installer's tool, so it keeps pymodbus' clients here, behind one exception translation.

A :class:`Link` is one connection: a TCP endpoint ``host:port`` (every unit id behind a
gateway shares it) or a serial port path (every RTU unit on the line shares it). Its lock makes
requests on one link strictly sequential. :func:`translated` is the one place where pymodbus'
failures become the drivers' exceptions (always chained).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerType

from drivers.config import ModbusTcpDeviceConfig, SerialPortConfig
from drivers.errors import DeviceUnavailable, DriverConfigError, ProtocolError
from drivers.planner import ReadRequest

__all__ = [
    "EXCEPTION_NAMES",
    "Link",
    "connect",
    "execute",
    "identify",
    "serial_link",
    "tcp_link",
    "translated",
]

EXCEPTION_NAMES = {
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


# -- the one place where pymodbus' failures become ours ---------------------------------------


@contextlib.contextmanager
def translated(device: str, what: str, timeout_s: float) -> Iterator[None]:
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


async def connect(client: Any, device: str, timeout_s: float) -> None:
    with translated(device, "connect", timeout_s):
        async with asyncio.timeout(timeout_s):
            ok = await client.connect()
        if not ok:
            raise ConnectionException("connection failed")


async def execute(
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
    with translated(device, what, timeout_s):
        async with asyncio.timeout(timeout_s):
            rr = await read(req.address, count=req.count, device_id=unit_id)
    if rr.isError():
        code = int(getattr(rr, "exception_code", 0) or 0)
        name = EXCEPTION_NAMES.get(code, "unknown")
        raise ProtocolError(
            device, f"{what}: exception response {code} ({name})", exception_code=code
        )
    data: list[int] | list[bool] = list(rr.bits if req.is_bits else rr.registers)
    if len(data) < req.count:
        raise ProtocolError(device, f"{what}: short reply ({len(data)} items)")
    return data[: req.count]


async def identify(client: Any, unit_id: int, device: str, timeout_s: float) -> dict[int, bytes]:
    """FC 43/14 (read device identification, basic objects: vendor, product code, revision).

    Returns object id → raw bytes. An exception response (e.g. 1: not supported) raises
    :class:`ProtocolError`; no answer raises :class:`DeviceUnavailable`. Read-only."""
    what = "read device identification (FC 43/14)"
    with translated(device, what, timeout_s):
        async with asyncio.timeout(timeout_s):
            rr = await client.read_device_information(read_code=1, object_id=0, device_id=unit_id)
    if rr.isError():
        code = int(getattr(rr, "exception_code", 0) or 0)
        name = EXCEPTION_NAMES.get(code, "unknown")
        raise ProtocolError(
            device, f"{what}: exception response {code} ({name})", exception_code=code
        )
    return {int(k): bytes(v) for k, v in dict(rr.information).items()}


# -- connections ------------------------------------------------------------------------------


class Link:
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
            await connect(self._client, device, timeout_s)
        return self._client

    def reset(self) -> None:
        """Close the connection; the next :meth:`client` reconnects."""
        if self._client is not None:
            self._client.close()


SERIAL_LINKS: dict[str, Link] = {}  # by port path: one owner per physical line
TCP_LINKS: dict[tuple[str, int], Link] = {}  # by endpoint: one connection per gateway


def tcp_link(cfg: ModbusTcpDeviceConfig) -> Link:
    endpoint = (cfg.host.lower(), cfg.port)
    link = TCP_LINKS.get(endpoint)
    if link is not None:
        return link

    def factory(timeout_s: float) -> Any:
        return AsyncModbusTcpClient(
            cfg.host,
            port=cfg.port,
            name=f"{cfg.host}:{cfg.port}",
            timeout=timeout_s,
            retries=0,
            reconnect_delay=0,
            reconnect_delay_max=0,
        )

    link = TCP_LINKS[endpoint] = Link(f"tcp:{cfg.host.lower()}:{cfg.port}", factory)
    return link


def serial_link(port: SerialPortConfig) -> Link:
    link = SERIAL_LINKS.get(port.path)
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

    link = SERIAL_LINKS[port.path] = Link(f"serial:{port.path}", factory, owner=port)
    return link
