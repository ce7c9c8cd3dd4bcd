"""What the agent needs from any device, and the one entry point that builds devices.

Every device kind implements :class:`Device`. ``bus`` names the physical link: devices with
the same ``bus`` must be polled by one task, one poll at a time (one owner per bus).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Protocol, Self

from drivers.config import (
    ModbusRtuDeviceConfig,
    ModbusTcpDeviceConfig,
    SerialLineDeviceConfig,
    SerialPortConfig,
)
from drivers.modbus import ModbusDevice, build_modbus_device, wall_clock_ms
from drivers.serial_line import SerialLineDevice, build_serial_line_device
from drivers.types import SampleBatch

__all__ = ["AnyDeviceConfig", "Device", "build_device"]

AnyDeviceConfig = ModbusTcpDeviceConfig | ModbusRtuDeviceConfig | SerialLineDeviceConfig


class Device(Protocol):
    """A polled device: ``async with device: batch = await device.poll()``."""

    name: str
    poll_interval_s: float
    online: bool

    @property
    def bus(self) -> str: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def poll(self) -> SampleBatch: ...


def build_device(
    cfg: AnyDeviceConfig,
    *,
    tag_index: Mapping[str, int],
    serial_ports: Mapping[str, SerialPortConfig],
    clock_ms: Callable[[], int] = wall_clock_ms,
) -> ModbusDevice | SerialLineDevice:
    """Build (no I/O) the device for ``cfg`` (raises :class:`DriverConfigError`)."""
    if isinstance(cfg, SerialLineDeviceConfig):
        return build_serial_line_device(
            cfg, tag_index=tag_index, serial_ports=serial_ports, clock_ms=clock_ms
        )
    return build_modbus_device(
        cfg, tag_index=tag_index, serial_ports=serial_ports, clock_ms=clock_ms
    )
