"""Driver configuration: pure data (msgspec structs), validated without I/O.

These structs are embedded in the agent's config file (``[[devices]]`` tables). They carry no
behaviour beyond construction; :func:`drivers.build` turns them into running drivers.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

__all__ = [
    "Checksum",
    "CurrentLoopConfig",
    "ExcludeConfig",
    "ModbusRtuDeviceConfig",
    "ModbusTcpDeviceConfig",
    "PollGroupConfig",
    "SerialLineDeviceConfig",
    "SerialLineTagConfig",
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
Checksum = Literal["none", "xor", "crc16_modbus", "sum8"]
MaxBits = Annotated[int, msgspec.Meta(ge=1, le=2000)]
Backoff = Annotated[float, msgspec.Meta(ge=1.0, le=3600.0)]


class CurrentLoopConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A 4–20 mA input read as raw counts (an analog input card's register).

    ``raw_span``: the counts at 4 mA and at 20 mA (e.g. ``[0, 27648]`` on a Siemens card,
    ``[4000, 20000]`` on a card counting µA); ``span``: the engineering values at 4 mA and at
    20 mA (e.g. ``[0, 100]`` %LEL; ``[100, 0]`` for a reverse-acting transmitter). A current
    below 3.6 mA or above 21 mA is a NAMUR NE43 fault signal: quality BAD_RANGE.
    """

    raw_span: tuple[float, float]
    span: tuple[float, float]


class TagConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One point read from a device. ``value = raw * scale + offset``.

    ``bit`` (0 = least significant): a ``bool`` taken from one bit of a holding or input
    register. ``current_loop``: a 4–20 mA input (see :class:`CurrentLoopConfig`); it replaces
    scale and offset, which must keep their defaults.
    """

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
    bit: Annotated[int, msgspec.Meta(ge=0, le=15)] | None = None
    current_loop: CurrentLoopConfig | None = None
    poll_group: Name | None = None  # a [[devices.poll_groups]] name; None: the device's period


class PollGroupConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Tags of one device read at their own period (e.g. gas detectors every 0.5 s, tank
    levels every 10 s). The group is polled as device ``{device}.{name}`` on the device's bus,
    with timeout ``min(timeout_s, poll_interval_s)``."""

    name: Name
    poll_interval_s: Seconds


class ExcludeConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Addresses a device refuses to read: no block read may cover ``address .. address+count-1``
    of ``table`` (a tag inside the range is read alone)."""

    table: Table = "holding"
    address: Address
    count: Annotated[int, msgspec.Meta(ge=1, le=65536)] = 1


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
    max_bits: MaxBits = 2000
    exclude: tuple[ExcludeConfig, ...] = ()
    backoff_max_s: Backoff = 60.0
    poll_groups: tuple[PollGroupConfig, ...] = ()
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
    max_bits: MaxBits = 2000
    exclude: tuple[ExcludeConfig, ...] = ()
    backoff_max_s: Backoff = 60.0
    poll_groups: tuple[PollGroupConfig, ...] = ()
    tags: tuple[TagConfig, ...] = ()


class SerialPortConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A physical serial line; it has exactly one owner (one request queue) in the agent."""

    name: Name
    path: str
    baudrate: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 9600
    parity: Literal["N", "E", "O"] = "N"
    bytesize: Literal[7, 8] = 8
    stopbits: Literal[1, 2] = 1


class SerialLineTagConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One value taken from the frames of a serial-line device.

    ``field`` is a named group of the device's ``pattern`` (``parse = "regex"``) or a 0-based
    field index (``parse = "delimited"``). ``key``: only frames whose key field (the device's
    ``key_field``) equals it carry this tag (one line per channel). ``value = raw * scale +
    offset``.
    """

    name: Name
    field: str | Annotated[int, msgspec.Meta(ge=0, le=255)]
    key: str | None = None
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    description: str = ""
    range: tuple[float, float] | None = None


class SerialLineDeviceConfig(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    kw_only=True,
    tag="serial_line",
    tag_field="driver",
):
    """A device that pushes or answers ASCII lines (gas controller, analyser) on its own port.

    Framing: ``framing = "terminator"`` cuts frames at ``terminator``; ``"start_end"`` takes
    what lies between ``start`` and ``end`` (bytes outside are garbage). Checksum: when not
    ``"none"``, a frame ends with ``checksum_separator`` and the checksum in hex (2 digits for
    xor / sum8, 4 for crc16_modbus, high byte first), computed over the frame text before the
    separator (NMEA: ``start = "$"``, ``checksum = "xor"``, separator ``"*"``). ``poll_request``
    (when not empty) is written at every poll and the first frame after it is the answer.
    A tag that got no frame within a poll period reports STALE (BAD_COMM when nothing came).
    """

    name: Name
    serial_port: Name
    poll_interval_s: Seconds = 1.0
    timeout_s: Seconds = 1.0
    framing: Literal["terminator", "start_end"] = "terminator"
    terminator: str = "\r\n"
    start: str = ""
    end: str = ""
    max_frame: Annotated[int, msgspec.Meta(ge=8, le=4096)] = 256
    checksum: Checksum = "none"
    checksum_separator: str = "*"
    parse: Literal["regex", "delimited"] = "delimited"
    pattern: str = ""
    delimiter: str = ","
    key_field: str | Annotated[int, msgspec.Meta(ge=0, le=255)] | None = None
    poll_request: str = ""
    backoff_max_s: Backoff = 60.0
    tags: tuple[SerialLineTagConfig, ...] = ()
