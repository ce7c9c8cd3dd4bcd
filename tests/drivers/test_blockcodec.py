"""The block codec (numpy, a whole poll at once) gives the scalar codec's results bit for bit."""

from __future__ import annotations

import math
import struct

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.blockcodec import PollDecoder
from drivers.codec import decode_tag, word_count
from drivers.config import CurrentLoopConfig, DataType, TagConfig, WordOrder
from drivers.planner import plan_reads
from drivers.types import Quality

ORDERS: tuple[WordOrder, ...] = ("ABCD", "CDAB", "BADC", "DCBA")
NUMBERS: tuple[DataType, ...] = (
    "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64",
)  # fmt: skip
# registers that make edge cases likely: zero, sign bits, NaN / inf patterns, all ones
REGISTER = st.one_of(
    st.integers(0, 0xFFFF), st.sampled_from([0, 0x8000, 0x7FC0, 0x7F80, 0xFF80, 0x7FF0, 0xFFFF])
)
FINITE = st.floats(-1e6, 1e6, allow_nan=False)


@st.composite
def a_tag(draw: st.DrawFn, i: int) -> TagConfig:
    kind = draw(st.sampled_from(["number", "bool", "bit", "coil", "loop"]))
    address = draw(st.integers(0, 60))
    rng = draw(st.none() | st.tuples(FINITE, FINITE).map(sorted).map(tuple))
    common = {"name": f"t{i}", "address": address, "range": rng}
    if kind == "coil":
        table = draw(st.sampled_from(["coil", "discrete"]))
        return TagConfig(**common, table=table, type="bool", scale=draw(FINITE))
    table = draw(st.sampled_from(["holding", "input"]))
    order = draw(st.none() | st.sampled_from(ORDERS))
    if kind == "bool":
        return TagConfig(**common, table=table, type="bool", byte_order=order)
    if kind == "bit":
        return TagConfig(**common, table=table, type="bool", bit=draw(st.integers(0, 15)))
    data_type = draw(st.sampled_from(NUMBERS))
    if kind == "loop":
        raw = draw(st.tuples(FINITE, FINITE).filter(lambda s: s[0] != s[1]))
        eng = draw(st.tuples(FINITE, FINITE).filter(lambda s: s[0] != s[1]))
        loop = CurrentLoopConfig(raw_span=raw, span=eng)
        return TagConfig(**common, table=table, type=data_type, current_loop=loop)
    return TagConfig(
        **common,
        table=table,
        type=data_type,
        byte_order=order,
        scale=draw(FINITE | st.just(1.0)),
        offset=draw(FINITE | st.just(0.0)),
    )


def bits_of(x: float) -> bytes:
    return struct.pack("<d", x)


@settings(max_examples=150, deadline=None)
@given(st.data(), st.integers(1, 30), st.sampled_from(ORDERS), st.integers(0, 12))
def test_the_block_codec_equals_the_scalar_codec_bit_for_bit_on_any_plan_and_registers(
    data: st.DataObject, n: int, device_order: WordOrder, max_gap: int
) -> None:
    tags = [data.draw(a_tag(i)) for i in range(n)]
    plan = plan_reads(tags, max_registers=data.draw(st.integers(4, 125)), max_gap=max_gap)
    decoder = PollDecoder(tags, plan, device_order)
    registers, bits = decoder.new_buffers()
    replies = []
    for k, req in enumerate(plan):
        if req.is_bits:
            reply: list[int] | list[bool] = data.draw(
                st.lists(st.booleans(), min_size=req.count, max_size=req.count)
            )
            bits[decoder.slice(k)] = reply
        else:
            reply = data.draw(st.lists(REGISTER, min_size=req.count, max_size=req.count))
            registers[decoder.slice(k)] = reply
        replies.append(reply)
    value, quality = decoder.decode(registers, bits)
    assert len(value) == len(quality) == len(tags)  # every tag exactly once
    for i, (t, k) in enumerate(zip(decoder.point_tag, decoder.point_request, strict=True)):
        req, tag = plan[k], tags[t]
        point = next(p for p in req.points if p.tag == t)
        own = replies[k][point.offset : point.offset + point.width]
        want_value, want_quality = decode_tag(tag, own, device_order)
        assert Quality(int(quality[i])) is want_quality, tag
        if math.isnan(want_value):
            assert math.isnan(value[i]), tag
        else:
            assert bits_of(float(value[i])) == bits_of(want_value), (tag, own)


def test_a_poll_decoder_decodes_every_word_order_of_a_hand_encoded_int32_in_one_gather() -> None:
    # 0x01020304 in ABCD, CDAB, BADC, DCBA, one after the other
    regs = [0x0102, 0x0304, 0x0304, 0x0102, 0x0201, 0x0403, 0x0403, 0x0201]
    tags = [
        TagConfig(name=o, address=2 * i, type="int32", byte_order=o) for i, o in enumerate(ORDERS)
    ]
    plan = plan_reads(tags)
    assert len(plan) == 1
    decoder = PollDecoder(tags, plan, "ABCD")
    registers, bits = decoder.new_buffers()
    registers[decoder.slice(0)] = regs
    value, quality = decoder.decode(registers, bits)
    assert value.tolist() == [0x01020304] * 4
    assert (quality == Quality.GOOD).all()
    assert sum(word_count("int32") for _ in tags) == len(regs)


def test_4_20_ma_counts_map_to_the_span_and_ne43_fault_currents_are_bad_range() -> None:
    loop = CurrentLoopConfig(raw_span=(0.0, 27648.0), span=(0.0, 100.0))
    tags = [TagConfig(name=f"ai{i}", address=i, type="int16", current_loop=loop) for i in range(6)]
    # 4 mA, 12 mA, 20 mA, 3.5 mA (wire break), 21.5 mA (short), 3.8 mA (still a measurement)
    counts = [0, 13824, 27648, -864, 32400, -345]
    plan = plan_reads(tags)
    decoder = PollDecoder(tags, plan, "ABCD")
    registers, bits = decoder.new_buffers()
    registers[decoder.slice(0)] = [c & 0xFFFF for c in counts]
    value, quality = decoder.decode(registers, bits)
    names = [Quality(int(q)).name for q in quality]
    assert names == ["GOOD", "GOOD", "GOOD", "BAD_RANGE", "BAD_RANGE", "GOOD"]
    assert value[:3].tolist() == [0.0, 50.0, 100.0]
    assert np.isnan(value[3:5]).all()
    assert -1.26 < value[5] < -1.24
