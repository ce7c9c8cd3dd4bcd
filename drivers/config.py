"""Driver configuration: pure data (msgspec structs), validated without I/O.

These structs are embedded in the agent's config file (``[[devices]]`` tables). They carry no
behaviour beyond construction; :func:`drivers.build_devices` turns them into running drivers.

:func:`device_issues` and :func:`port_issues` are the drivers' own checks of their section: every
problem that :func:`drivers.build_devices` would raise for at run time, and every value that
would be accepted but meaningless (non-finite scale, an infinite poll period). They return
``(path, message, hint)`` tuples, the one issue shape of the project (``agent.config.issues``
explains why a tuple shape and not a class: a leaf may import neither the agent nor another
leaf); ``path`` is relative to the checked table, e.g. ``tags[0] "GT-101".scale``. No I/O.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import msgspec

__all__ = [
    "MAX_PERIOD_S",
    "MIN_PERIOD_S",
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
    "device_issues",
    "port_issues",
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
ProbeInterval = Annotated[float, msgspec.Meta(ge=0.1, le=600.0)]
RetryAfter = Annotated[float, msgspec.Meta(ge=1.0, le=86400.0)]


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
    """A device reached over TCP: a PLC or a Modbus TCP gateway (``framing = "mbap"``, several
    unit ids share the connection), or a serial device server / DTU that passes RTU frames
    through a TCP socket unchanged (``framing = "rtu"``: RTU over TCP, one request at a time per
    server port).

    While the device is lost it is probed with one cheap request every ``probe_interval_s``
    (at least the poll period for RTU over TCP: the line behind is shared); reconnecting a
    socket backs off up to ``backoff_max_s``. An address the device refuses is re-tried after
    ``refusal_retry_s`` (see :mod:`drivers.refusals`).
    """

    name: Name
    host: str
    port: Port = 502
    framing: Literal["mbap", "rtu"] = "mbap"
    unit_id: UnitId = 1
    poll_interval_s: Seconds = 1.0
    timeout_s: Seconds = 1.0
    byte_order: WordOrder = "ABCD"
    max_registers: Annotated[int, msgspec.Meta(ge=1, le=125)] = 125
    max_gap: Annotated[int, msgspec.Meta(ge=0, le=124)] = 10
    max_bits: MaxBits = 2000
    exclude: tuple[ExcludeConfig, ...] = ()
    backoff_max_s: Backoff = 10.0
    probe_interval_s: ProbeInterval = 2.0
    refusal_retry_s: RetryAfter = 600.0
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
    backoff_max_s: Backoff = 10.0
    probe_interval_s: ProbeInterval = 2.0
    refusal_retry_s: RetryAfter = 600.0
    poll_groups: tuple[PollGroupConfig, ...] = ()
    tags: tuple[TagConfig, ...] = ()


class SerialPortConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A physical serial line; it has exactly one owner (one request queue) in the agent.
    ``modbus_framing``: how the Modbus devices on it frame their messages (every device on one
    line speaks the same)."""

    name: Name
    path: str
    modbus_framing: Literal["rtu", "ascii"] = "rtu"
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
    number: Literal["decimal", "hex"] = "decimal"  # the field's grammar (strict, see lineproto)
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
    While a polled device is lost its ``poll_request`` is sent every ``probe_interval_s`` (not
    every period); reopening a missing or busy port backs off up to ``backoff_max_s``.
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
    probe_interval_s: ProbeInterval = 2.0
    tags: tuple[SerialLineTagConfig, ...] = ()


# ---------------------------------------------------------------------------------------------
# Checks (no I/O): what building a device would reject, and what would be meaningless

MIN_PERIOD_S = 0.001
"""Shortest poll period and timeout accepted: below it a poll loop only burns the CPU."""
MAX_PERIOD_S = 86400.0
"""Longest poll period and timeout accepted (one day): longer is a typo, not a period."""
_MAX_VALUE = 1e15  # scale, offset, range: larger is no engineering value of a field sensor

Issue = tuple[str, str, str]
AnyDevice = ModbusTcpDeviceConfig | ModbusRtuDeviceConfig | SerialLineDeviceConfig


def _number(key: str, value: float, low: float, high: float) -> list[Issue]:
    if math.isfinite(value) and low <= value <= high:
        return []
    msg = f"must be a finite number in [{low:.15g}, {high:.15g}], got {value:.15g}"
    return [(key, msg, f"set {key.rsplit('.', 1)[-1]} to a number in that range")]


def _text(key: str, value: str, *, what: str, empty_ok: bool = False) -> list[Issue]:
    if not value and not empty_ok:
        return [(key, f"{what} is empty", f"set {key} to the {what}")]
    if any(not c.isprintable() for c in value):
        return [(key, f"{what} holds a control character", "remove it (e.g. a NUL byte)")]
    return []


def port_issues(port: SerialPortConfig) -> list[Issue]:
    """Problems of one ``[[serial_ports]]`` table, paths relative to it."""
    return _text("path", port.path, what="serial device path")


def device_issues(cfg: AnyDevice) -> list[Issue]:
    """Problems of one ``[[devices]]`` table, paths relative to it (``timeout_s``, ``tags[0]
    "GT-101".scale``); cross-device checks (unique names, ports) are the agent's."""
    from drivers.devices import poll_group_problems
    from drivers.lineproto import config_problems

    out: list[Issue] = []
    out += _number("poll_interval_s", cfg.poll_interval_s, MIN_PERIOD_S, MAX_PERIOD_S)
    out += _number("timeout_s", cfg.timeout_s, MIN_PERIOD_S, MAX_PERIOD_S)
    if cfg.timeout_s > cfg.poll_interval_s:
        out.append(
            (
                "timeout_s",
                f"timeout_s {cfg.timeout_s:g} is longer than poll_interval_s "
                f"{cfg.poll_interval_s:g}",
                "a dead device may only cost its own poll period: "
                "make timeout_s at most poll_interval_s",
            )
        )
    if not cfg.tags:
        hint = "add [[devices.tags]] tables under this device, or remove the device"
        out.append(("tags", "device has no tags", hint))
    if isinstance(cfg, SerialLineDeviceConfig):
        out += config_problems(cfg)
        for j, line_tag in enumerate(cfg.tags):
            out += _value_issues(f'tags[{j}] "{line_tag.name}"', line_tag)
        return out
    if isinstance(cfg, ModbusTcpDeviceConfig):
        out += _host_issues(cfg.host)
    for k, group in enumerate(cfg.poll_groups):
        key = f"poll_groups[{k}].poll_interval_s"
        out += _number(key, group.poll_interval_s, MIN_PERIOD_S, MAX_PERIOD_S)
    for k, ex in enumerate(cfg.exclude):
        if ex.address + ex.count > 65536:
            msg = f"exclude {ex.address}+{ex.count} runs past the last address 65535"
            out.append((f"exclude[{k}].count", msg, f"count may be at most {65536 - ex.address}"))
    out += poll_group_problems(cfg)
    for j, tag in enumerate(cfg.tags):
        out += _modbus_tag_issues(f'tags[{j}] "{tag.name}"', tag, cfg.max_registers)
    return out


def _host_issues(host: str) -> list[Issue]:
    out = _text("host", host, what="host name or address")
    if not out and (len(host) > 253 or any(c.isspace() for c in host)):
        hint = 'a host name or IP address, e.g. host = "10.0.0.5"'
        out.append(("host", "not a host name or address", hint))
    return out


def _value_issues(here: str, tag: TagConfig | SerialLineTagConfig) -> list[Issue]:
    """``value = raw * scale + offset`` and ``range`` must be finite numbers."""
    out = _number(f"{here}.scale", tag.scale, -_MAX_VALUE, _MAX_VALUE)
    out += _number(f"{here}.offset", tag.offset, -_MAX_VALUE, _MAX_VALUE)
    if tag.range is not None:
        low, high = tag.range
        bad = _number(f"{here}.range", low, -_MAX_VALUE, _MAX_VALUE)
        bad = bad or _number(f"{here}.range", high, -_MAX_VALUE, _MAX_VALUE)
        if bad:
            out += bad
        elif low >= high:
            msg = f"range [{low:g}, {high:g}]: min must be less than max"
            hint = "write range = [min, max], e.g. [0, 100] for 0-100 %LEL"
            out.append((f"{here}.range", msg, hint))
    return out


def _modbus_tag_issues(here: str, tag: TagConfig, max_registers: int) -> list[Issue]:
    from drivers.codec import BIT_TABLES, tag_problems, word_count

    out: list[Issue] = []
    if tag.table in BIT_TABLES and tag.type != "bool":
        msg = f'{tag.table} tables hold single bits: type "{tag.type}" cannot be read from them'
        hint = 'set type = "bool", or read the value from table = "holding" or "input"'
        out.append((f"{here}.type", msg, hint))
    count = word_count(tag.type) if tag.table not in BIT_TABLES else 1
    if tag.address + count > 65536:
        unit = "register" if tag.table not in BIT_TABLES else "bit"
        msg = (
            f"{tag.type} at address {tag.address} needs {count} {unit}{'s' if count > 1 else ''} "
            "and runs past the last address 65535"
        )
        out.append(
            (f"{here}.address", msg, f"the highest address for {tag.type} is {65536 - count}")
        )
    if tag.table not in BIT_TABLES and count > max_registers:
        msg = f"a {tag.type} needs {count} registers but max_registers is {max_registers}"
        out.append((f"{here}.type", msg, f"raise the device's max_registers to at least {count}"))
    out += _value_issues(here, tag)
    out += [(f"{here}.{k}", m, h) for k, m, h in tag_problems(tag)]
    return out
