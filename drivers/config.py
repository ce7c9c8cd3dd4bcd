"""Driver configuration: pure data (msgspec structs), validated without I/O.

These structs are embedded in the agent's config file (``[[devices]]`` tables). They carry no
behaviour beyond construction; :func:`drivers.build` turns them into running drivers.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

__all__ = [
    "ModbusRtuDeviceConfig",
    "ModbusTcpDeviceConfig",
    "SerialPortConfig",
    "TagConfig",
]

Name = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
UnitId = Annotated[int, msgspec.Meta(ge=0, le=247)]
Address = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Seconds = Annotated[float, msgspec.Meta(gt=0)]

Table = Literal["holding", "input", "coil", "discrete"]
DataType = Literal[
    "bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"
]
WordOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]


class TagConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One point read from a device. ``value = raw * scale + offset``."""

    name: Name
    address: Address
    table: Table = "holding"
    type: DataType = "uint16"
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    description: str = ""
    byte_order: WordOrder | None = None  # None: the device's
    range: tuple[float, float] | None = None  # valid measuring range, engineering units


class ModbusTcpDeviceConfig(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    kw_only=True,
    tag="modbus_tcp",
    tag_field="driver",
):
    """A device reached over Modbus TCP (a PLC, or a TCP-to-RTU gateway with several unit ids)."""

    name: Name
    host: str
    port: Port = 502
    unit_id: UnitId = 1
    poll_interval_s: Seconds = 1.0
    timeout_s: Seconds = 1.0
    byte_order: WordOrder = "ABCD"
    max_registers: Annotated[int, msgspec.Meta(ge=1, le=125)] = 125
    max_gap: Annotated[int, msgspec.Meta(ge=0, le=124)] = 10
    tags: tuple[TagConfig, ...] = ()


class ModbusRtuDeviceConfig(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    kw_only=True,
    tag="modbus_rtu",
    tag_field="driver",
):
    """A device on a serial bus (``serial_port`` names a ``[[serial_ports]]`` entry)."""

    name: Name
    serial_port: Name
    unit_id: Annotated[int, msgspec.Meta(ge=1, le=247)] = 1
    poll_interval_s: Seconds = 1.0
    timeout_s: Seconds = 1.0
    byte_order: WordOrder = "ABCD"
    max_registers: Annotated[int, msgspec.Meta(ge=1, le=125)] = 125
    max_gap: Annotated[int, msgspec.Meta(ge=0, le=124)] = 10
    tags: tuple[TagConfig, ...] = ()


class SerialPortConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A physical serial line; it has exactly one owner (one request queue) in the agent."""

    name: Name
    path: str
    baudrate: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 9600
    parity: Literal["N", "E", "O"] = "N"
    bytesize: Literal[7, 8] = 8
    stopbits: Literal[1, 2] = 1
