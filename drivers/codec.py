"""Sans-I/O decoding of Modbus registers and bits into engineering values.

Word orders name the bytes of a 32-bit value as ``A B C D`` from most to least significant,
in the order they appear on the wire (register by register, high byte first):

========  ==========================  =====================================================
order     32-bit registers            rule (applies to 16/32/64-bit values alike)
========  ==========================  =====================================================
ABCD      ``[AB, CD]``                big-endian words, big-endian bytes (Modbus default)
CDAB      ``[CD, AB]``                words reversed ("word swap"), bytes big-endian
BADC      ``[BA, DC]``                words big-endian, bytes swapped in each word
DCBA      ``[DC, BA]``                everything reversed (little-endian)
========  ==========================  =====================================================

A 64-bit value extends the same rule (CDAB on ``ABCDEFGH`` is ``[GH, EF, CD, AB]``); a 16-bit
value is affected only by the byte swap (BADC, DCBA).

Contracts:
- ``bool`` on a coil / discrete input is the bit; on a register table it is ``register != 0``,
  or, with ``bit = n``, bit ``n`` of the register's value as sent (0 = least significant; word
  and byte orders do not apply to a single bit). Coils and discrete inputs carry only ``bool``
  (:func:`check_tag`).
- Engineering value = ``raw * scale + offset``. With ``current_loop`` (4–20 mA; scale and
  offset are then 1 and 0), ``frac = (raw - raw4) / (raw20 - raw4)`` is the fraction of the
  span, the current is ``4 + 16 * frac`` mA, and the value is ``lo + frac * (hi - lo)``; a
  current below 3.6 mA or above 21 mA (NAMUR NE43 fault signal) is ``(NaN, BAD_RANGE)``.
- A value outside the tag's ``range`` (inclusive) or not finite (a float register holding
  NaN/inf) is ``(NaN, Quality.BAD_RANGE)``; anything else is ``(value, Quality.GOOD)``. 64-bit
  integers are converted to float64 (exact up to 2**53) for the rules; :func:`exact_int` gives
  the exact integer of an ``int64``/``uint64`` tag without scale, offset or current loop, which
  is what goes on the wire (:attr:`drivers.types.SampleBatch.exact`).
- :mod:`drivers.blockcodec` computes the same results for whole blocks with numpy; the two
  must agree bit for bit (property-tested), so the arithmetic here is written in the same
  order of operations as there.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

from drivers.config import DataType, SerialLineTagConfig, TagConfig, WordOrder
from drivers.errors import DriverConfigError
from drivers.types import Quality

__all__ = [
    "BIT_TABLES",
    "NE43_HIGH_MA",
    "NE43_LOW_MA",
    "check_tag",
    "decode_registers",
    "decode_tag",
    "encode_registers",
    "exact_int",
    "is_exact_int",
    "tag_problems",
    "to_engineering",
    "word_count",
]

BIT_TABLES = frozenset({"coil", "discrete"})
NE43_LOW_MA = 3.6  # below: sensor or wire fault (NAMUR NE43)
NE43_HIGH_MA = 21.0  # above: transmitter fault / short circuit

# struct format and register count per type (bool occupies one register on register tables)
_FORMATS: dict[str, tuple[str, int]] = {
    "bool": ("H", 1),
    "int16": ("h", 1),
    "uint16": ("H", 1),
    "int32": ("i", 2),
    "uint32": ("I", 2),
    "int64": ("q", 4),
    "uint64": ("Q", 4),
    "float32": ("f", 2),
    "float64": ("d", 4),
}


def word_count(data_type: DataType) -> int:
    """Registers occupied by one value of ``data_type`` on a register table."""
    return _FORMATS[data_type][1]


def tag_problems(tag: TagConfig) -> list[tuple[str, str, str]]:
    """``(key, message, hint)`` for each problem of ``bit`` / ``current_loop`` (no I/O)."""
    out: list[tuple[str, str, str]] = []
    if tag.bit is not None:
        if tag.table in BIT_TABLES:
            hint = 'remove bit, or read the register from table = "holding" or "input"'
            out.append(("bit", f"{tag.table} tables hold single bits already", hint))
        if tag.type != "bool":
            hint = 'set type = "bool" (one bit is a bool)'
            out.append(("type", f'bit = {tag.bit} reads one bit, not a "{tag.type}"', hint))
    loop = tag.current_loop
    if loop is not None:
        if tag.type == "bool":
            hint = 'a 4-20 mA input is a number: e.g. type = "int16" or "uint16"'
            out.append(("type", "current_loop on a bool", hint))
        if tag.scale != 1.0 or tag.offset != 0.0:
            hint = "remove scale and offset: current_loop.span sets the engineering values"
            out.append(("scale", "current_loop replaces scale and offset", hint))
        for key, (a, b) in (("raw_span", loop.raw_span), ("span", loop.span)):
            if not (math.isfinite(a) and math.isfinite(b)) or a == b:
                hint = f"write current_loop.{key} = [value at 4 mA, value at 20 mA], different"
                out.append((f"current_loop.{key}", f"{key} [{a:g}, {b:g}] is not a span", hint))
    return out


def check_tag(tag: TagConfig) -> None:
    """Raise :class:`DriverConfigError` when the tag cannot be decoded as configured."""
    problems = tag_problems(tag)
    if problems:
        key, msg, hint = problems[0]
        raise DriverConfigError(f"tag {tag.name!r}: {key}: {msg}; {hint}")
    if tag.table in BIT_TABLES and tag.type != "bool":
        raise DriverConfigError(
            f"tag {tag.name!r}: table {tag.table!r} holds single bits; its type must be 'bool', "
            f"not {tag.type!r}"
        )
    if tag.table not in BIT_TABLES and tag.address + word_count(tag.type) - 1 > 0xFFFF:
        raise DriverConfigError(
            f"tag {tag.name!r}: a {tag.type} at address {tag.address} runs past register 65535"
        )


def _swap(order: WordOrder) -> tuple[bool, bool]:
    """(reverse the words, swap the bytes inside each word)."""
    return order in ("CDAB", "DCBA"), order in ("BADC", "DCBA")


def decode_registers(registers: Sequence[int], data_type: DataType, order: WordOrder) -> float:
    """Raw value of ``registers`` (exactly ``word_count(data_type)`` of them, 0..65535 each)."""
    fmt, words = _FORMATS[data_type]
    if len(registers) != words:
        raise ValueError(f"a {data_type} needs {words} registers, got {len(registers)}")
    reverse_words, swap_bytes = _swap(order)
    regs = list(reversed(registers)) if reverse_words else list(registers)
    raw = b"".join(struct.pack("<H" if swap_bytes else ">H", r & 0xFFFF) for r in regs)
    (value,) = struct.unpack(">" + fmt, raw)
    if data_type == "bool":
        return 1.0 if value else 0.0
    return float(value)


def encode_registers(value: float, data_type: DataType, order: WordOrder) -> list[int]:
    """Inverse of :func:`decode_registers` (used by simulators and tests to build registers)."""
    fmt, _words = _FORMATS[data_type]
    if fmt in ("f", "d"):
        raw = struct.pack(">" + fmt, float(value))
    else:
        raw = struct.pack(">" + fmt, round(value))
    reverse_words, swap_bytes = _swap(order)
    regs = [
        struct.unpack("<H" if swap_bytes else ">H", raw[i : i + 2])[0]
        for i in range(0, len(raw), 2)
    ]
    return list(reversed(regs)) if reverse_words else regs


def to_engineering(raw: float, tag: TagConfig | SerialLineTagConfig) -> tuple[float, Quality]:
    """Apply scale and offset (or the 4–20 mA span), then the range and finiteness checks (see
    the module contract)."""
    value = raw * tag.scale + tag.offset
    loop = tag.current_loop if isinstance(tag, TagConfig) else None
    if loop is not None:
        frac = (value - loop.raw_span[0]) / (loop.raw_span[1] - loop.raw_span[0])
        ma = 4.0 + 16.0 * frac
        if ma < NE43_LOW_MA or ma > NE43_HIGH_MA:
            return math.nan, Quality.BAD_RANGE
        value = loop.span[0] + frac * (loop.span[1] - loop.span[0])
    if not math.isfinite(value):
        return math.nan, Quality.BAD_RANGE
    if tag.range is not None and not (tag.range[0] <= value <= tag.range[1]):
        return math.nan, Quality.BAD_RANGE
    return value, Quality.GOOD


def decode_tag(
    tag: TagConfig, data: Sequence[int] | Sequence[bool], default_order: WordOrder
) -> tuple[float, Quality]:
    """Engineering value of one tag from its own registers (or its single bit)."""
    if tag.table in BIT_TABLES:
        if len(data) != 1:
            raise ValueError(f"tag {tag.name!r}: one bit expected, got {len(data)}")
        return to_engineering(1.0 if data[0] else 0.0, tag)
    if tag.bit is not None:
        if len(data) != 1:
            raise ValueError(f"tag {tag.name!r}: one register expected, got {len(data)}")
        return to_engineering(float((int(data[0]) >> tag.bit) & 1), tag)
    order = tag.byte_order or default_order
    return to_engineering(decode_registers([int(r) for r in data], tag.type, order), tag)


def is_exact_int(tag: TagConfig) -> bool:
    """Does ``tag`` carry an exact integer past float64's 2**53 (a plain int64 / uint64)?"""
    return (
        tag.type in ("int64", "uint64")
        and tag.table not in BIT_TABLES
        and tag.bit is None
        and tag.current_loop is None
        and tag.scale == 1.0
        and tag.offset == 0.0
    )


def exact_int(tag: TagConfig, registers: Sequence[int], default_order: WordOrder) -> int:
    """The exact integer of a plain int64/uint64 tag (see :func:`is_exact_int`)."""
    reverse_words, swap_bytes = _swap(tag.byte_order or default_order)
    regs = list(reversed(registers)) if reverse_words else list(registers)
    raw = b"".join(struct.pack("<H" if swap_bytes else ">H", int(r) & 0xFFFF) for r in regs)
    return int.from_bytes(raw, "big", signed=tag.type == "int64")
