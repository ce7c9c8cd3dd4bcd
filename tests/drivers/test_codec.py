"""Register decoding from known byte patterns (written by hand, not by the encoder)."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.codec import (
    check_tag,
    decode_registers,
    decode_tag,
    encode_registers,
    tag_problems,
    to_engineering,
    word_count,
)
from drivers.config import CurrentLoopConfig, DataType, TagConfig, WordOrder
from drivers.errors import DriverConfigError
from drivers.types import Quality

ORDERS: tuple[WordOrder, ...] = ("ABCD", "CDAB", "BADC", "DCBA")

# bytes 0x01 0x02 0x03 0x04 (0x01020304) as registers in each word order
INT32_REGS = {
    "ABCD": [0x0102, 0x0304],
    "CDAB": [0x0304, 0x0102],
    "BADC": [0x0201, 0x0403],
    "DCBA": [0x0403, 0x0201],
}
# 0x0102030405060708
INT64_REGS = {
    "ABCD": [0x0102, 0x0304, 0x0506, 0x0708],
    "CDAB": [0x0708, 0x0506, 0x0304, 0x0102],
    "BADC": [0x0201, 0x0403, 0x0605, 0x0807],
    "DCBA": [0x0807, 0x0605, 0x0403, 0x0201],
}


@pytest.mark.parametrize("order", ORDERS)
def test_int32_in_every_word_order_decodes_to_the_same_number(order: WordOrder) -> None:
    assert decode_registers(INT32_REGS[order], "int32", order) == 0x01020304
    assert decode_registers(INT32_REGS[order], "uint32", order) == 0x01020304


@pytest.mark.parametrize("order", ORDERS)
def test_64_bit_values_in_every_word_order_decode_to_the_same_number(order: WordOrder) -> None:
    assert decode_registers(INT64_REGS[order], "int64", order) == float(0x0102030405060708)
    assert decode_registers(INT64_REGS[order], "uint64", order) == float(0x0102030405060708)


def test_float32_and_float64_decode_ieee_patterns() -> None:
    # -123.456f = C2 F6 E9 79; -2.5 = C0 04 00 00 00 00 00 00
    assert decode_registers([0xC2F6, 0xE979], "float32", "ABCD") == pytest.approx(-123.456)
    assert decode_registers([0xE979, 0xC2F6], "float32", "CDAB") == pytest.approx(-123.456)
    assert decode_registers([0xF6C2, 0x79E9], "float32", "BADC") == pytest.approx(-123.456)
    assert decode_registers([0x79E9, 0xF6C2], "float32", "DCBA") == pytest.approx(-123.456)
    assert decode_registers([0xC004, 0, 0, 0], "float64", "ABCD") == -2.5
    assert decode_registers([0, 0, 0, 0xC004], "float64", "CDAB") == -2.5
    assert decode_registers([0, 0, 0, 0x04C0], "float64", "DCBA") == -2.5


def test_16_bit_values_are_signed_or_not_and_only_byte_swaps_affect_them() -> None:
    assert decode_registers([0xFFFE], "int16", "ABCD") == -2
    assert decode_registers([0xFFFE], "uint16", "ABCD") == 65534
    assert decode_registers([0x1234], "uint16", "CDAB") == 0x1234
    assert decode_registers([0x1234], "uint16", "BADC") == 0x3412
    assert decode_registers([0x1234], "uint16", "DCBA") == 0x3412
    assert decode_registers([0xFEFF], "int16", "BADC") == -2


def test_signed_32_and_64_bit_negatives() -> None:
    assert decode_registers([0xFFFF, 0xFFFE], "int32", "ABCD") == -2
    assert decode_registers([0xFFFE, 0xFFFF], "int32", "CDAB") == -2
    assert decode_registers([0xFFFF, 0xFFFE], "uint32", "ABCD") == 0xFFFFFFFE
    assert decode_registers([0xFFFF] * 4, "int64", "ABCD") == -1


def test_bool_on_a_register_is_nonzero_and_on_a_bit_table_is_the_bit() -> None:
    assert decode_registers([0x0100], "bool", "ABCD") == 1.0
    assert decode_registers([0], "bool", "ABCD") == 0.0
    coil = TagConfig(name="c", table="coil", address=0, type="bool")
    assert decode_tag(coil, [True], "ABCD") == (1.0, Quality.GOOD)
    assert decode_tag(coil, [False], "ABCD") == (0.0, Quality.GOOD)


def test_wrong_register_count_is_a_programming_error_not_a_value() -> None:
    with pytest.raises(ValueError, match="needs 2 registers"):
        decode_registers([1], "float32", "ABCD")


def test_scale_and_offset_are_applied_and_the_range_is_inclusive() -> None:
    tag = TagConfig(name="t", address=0, scale=0.1, offset=-10.0, range=(0.0, 40.0))
    assert to_engineering(500, tag) == (40.0, Quality.GOOD)
    assert to_engineering(100, tag) == (0.0, Quality.GOOD)
    value, quality = to_engineering(501, tag)
    assert math.isnan(value)
    assert quality is Quality.BAD_RANGE
    value, quality = to_engineering(99, tag)
    assert math.isnan(value)
    assert quality is Quality.BAD_RANGE


def test_a_non_finite_float_register_is_bad_range_never_a_good_nan() -> None:
    tag = TagConfig(name="t", address=0, type="float32")
    for regs in ([0x7FC0, 0], [0x7F80, 0], [0xFF80, 0]):  # NaN, +inf, -inf
        value, quality = decode_tag(tag, regs, "ABCD")
        assert math.isnan(value)
        assert quality is Quality.BAD_RANGE


def test_tag_word_order_overrides_the_device_default() -> None:
    tag = TagConfig(name="t", address=0, type="int32", byte_order="CDAB")
    assert decode_tag(tag, INT32_REGS["CDAB"], "ABCD") == (0x01020304, Quality.GOOD)
    plain = TagConfig(name="p", address=0, type="int32")
    assert decode_tag(plain, INT32_REGS["DCBA"], "DCBA") == (0x01020304, Quality.GOOD)


def test_non_bool_types_on_bit_tables_and_values_past_65535_are_config_errors() -> None:
    with pytest.raises(DriverConfigError, match="must be 'bool'"):
        check_tag(TagConfig(name="c", table="coil", address=0, type="uint16"))
    with pytest.raises(DriverConfigError, match="runs past"):
        check_tag(TagConfig(name="f", address=65535, type="float32"))
    check_tag(TagConfig(name="ok", address=65534, type="float32"))


INT_TYPES: dict[DataType, tuple[int, int]] = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**53), 2**53),
    "uint64": (0, 2**53),
}


@given(st.data(), st.sampled_from(sorted(INT_TYPES)), st.sampled_from(ORDERS))
def test_integers_survive_encode_then_decode(
    data: st.DataObject, data_type: DataType, order: WordOrder
) -> None:
    lo, hi = INT_TYPES[data_type]
    x = data.draw(st.integers(lo, hi))
    regs = encode_registers(x, data_type, order)
    assert len(regs) == word_count(data_type)
    assert decode_registers(regs, data_type, order) == x


@given(st.floats(width=32, allow_nan=False), st.sampled_from(ORDERS))
def test_float32_survives_encode_then_decode(x: float, order: WordOrder) -> None:
    assert decode_registers(encode_registers(x, "float32", order), "float32", order) == x
    # and the ABCD form is the IEEE big-endian pattern
    raw = struct.pack(">f", x)
    assert encode_registers(x, "float32", "ABCD") == [
        int.from_bytes(raw[:2], "big"),
        int.from_bytes(raw[2:], "big"),
    ]


def test_a_bit_of_a_register_is_read_from_the_register_value_lsb_first() -> None:
    status = 0b1000_0000_0000_0010
    for bit, want in ((0, 0.0), (1, 1.0), (14, 0.0), (15, 1.0)):
        tag = TagConfig(name="s", address=0, type="bool", bit=bit, byte_order="DCBA")
        assert decode_tag(tag, [status], "BADC") == (want, Quality.GOOD)


def test_4_20_ma_counts_follow_the_span_and_ne43_fault_currents_are_bad_range() -> None:
    loop = CurrentLoopConfig(raw_span=(4000.0, 20000.0), span=(100.0, 0.0))  # reverse acting
    tag = TagConfig(name="ai", address=0, current_loop=loop)
    assert to_engineering(4000, tag) == (100.0, Quality.GOOD)
    assert to_engineering(12000, tag) == (50.0, Quality.GOOD)
    assert to_engineering(20000, tag) == (0.0, Quality.GOOD)
    assert to_engineering(3600, tag)[1] is Quality.GOOD  # 3.6 mA: the NE43 limit itself
    assert to_engineering(21000, tag)[1] is Quality.GOOD
    for fault in (3599, 21001, 0):
        value, quality = to_engineering(fault, tag)
        assert math.isnan(value)
        assert quality is Quality.BAD_RANGE


@pytest.mark.parametrize(
    ("tag", "match"),
    [
        (TagConfig(name="b", table="coil", address=0, type="bool", bit=3), "hold single bits"),
        (TagConfig(name="b", address=0, type="uint16", bit=3), 'set type = "bool"'),
        (
            TagConfig(
                name="l",
                address=0,
                scale=2.0,
                current_loop=CurrentLoopConfig(raw_span=(0, 1), span=(0, 1)),
            ),
            "replaces scale and offset",
        ),
        (
            TagConfig(
                name="l", address=0, current_loop=CurrentLoopConfig(raw_span=(5, 5), span=(0, 1))
            ),
            "raw_span",
        ),
        (
            TagConfig(
                name="l",
                address=0,
                type="bool",
                current_loop=CurrentLoopConfig(raw_span=(0, 1), span=(0, 1)),
            ),
            "current_loop on a bool",
        ),
    ],
)
def test_bits_and_current_loops_that_cannot_work_are_config_errors_with_a_fix(
    tag: TagConfig, match: str
) -> None:
    with pytest.raises(DriverConfigError, match=match):
        check_tag(tag)
    assert tag_problems(tag)
