"""Serial-line protocol without I/O: framing under any chunking, checksums, parsing."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.config import SerialLineDeviceConfig, SerialLineTagConfig
from drivers.errors import DriverConfigError
from drivers.lineproto import Framer, LineProtocol, checksum_text, config_problems, parse_number
from drivers.types import Quality


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def feed_all(framer: Framer, chunks: list[bytes]) -> list[bytes]:
    return [f for c in chunks for f in framer.feed(c)]


payloads = st.binary(min_size=1, max_size=40).filter(lambda b: b"\r\n" not in b)
garbage_bytes = st.binary(max_size=30).map(lambda b: b.replace(b"\x02", b"").replace(b"\x03", b""))


@settings(max_examples=200, deadline=None)
@given(st.lists(payloads, max_size=12), st.lists(st.integers(0, 10_000), max_size=30))
def test_terminated_frames_do_not_depend_on_how_the_stream_is_chunked(
    frames: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(f + b"\r\n" for f in frames)
    whole = Framer(start=b"", end=b"\r\n", max_frame=64).feed(stream)
    pieces = feed_all(Framer(start=b"", end=b"\r\n", max_frame=64), chunked(stream, cuts))
    assert whole == pieces == frames


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            garbage_bytes, payloads.map(lambda b: b.replace(b"\x02", b"").replace(b"\x03", b""))
        ),
        max_size=10,
    ),
    garbage_bytes,
    st.lists(st.integers(0, 10_000), max_size=30),
)
def test_start_end_frames_survive_garbage_between_them_and_any_chunking(
    items: list[tuple[bytes, bytes]], tail: bytes, cuts: list[int]
) -> None:
    stream = b"".join(g + b"\x02" + p + b"\x03" for g, p in items) + tail
    framer = Framer(start=b"\x02", end=b"\x03", max_frame=64)
    assert feed_all(framer, chunked(stream, cuts)) == [p for _, p in items]
    assert framer.garbage == sum(len(g) for g, _ in items) + len(tail)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(0, 10_000), max_size=40))
def test_any_bytes_give_the_same_frames_whole_or_in_pieces(data: bytes, cuts: list[int]) -> None:
    for start, end in ((b"", b"\r\n"), (b"$", b"\r\n"), (b"\x02", b"\x03")):
        whole = Framer(start=start, end=end, max_frame=16).feed(data)
        pieces = feed_all(Framer(start=start, end=end, max_frame=16), chunked(data, cuts))
        assert whole == pieces
        assert all(len(f) <= 16 for f in whole)


def test_a_frame_cut_short_by_a_new_start_is_dropped_and_counted() -> None:
    framer = Framer(start=b"$", end=b"\r\n", max_frame=64)
    assert framer.feed(b"$GAS,1,2.0$GAS,2,3.0\r\n") == [b"GAS,2,3.0"]
    assert framer.dropped == 1


def test_an_overlong_line_is_dropped_and_the_next_line_is_read() -> None:
    framer = Framer(start=b"", end=b"\n", max_frame=8)
    assert framer.feed(b"x" * 20) == []
    assert framer.feed(b"yyy\nok\n") == [b"ok"]
    assert framer.dropped == 1


def test_checksums_match_published_examples() -> None:
    # NMEA 0183 example sentence: $GPGLL,5057.970,N,00146.110,E,142451,A*27
    assert checksum_text("xor", b"GPGLL,5057.970,N,00146.110,E,142451,A") == b"27"
    # CRC-16/MODBUS check value of "123456789" is 0x4B37 (CRC catalogue)
    assert checksum_text("crc16_modbus", b"123456789") == b"4B37"
    assert checksum_text("sum8", b"123456789") == b"DD"  # 0x1DD & 0xFF


def gas_controller(**kw: object) -> SerialLineDeviceConfig:
    base: dict[str, object] = {
        "name": "gas",
        "serial_port": "p",
        "framing": "start_end",
        "start": "$",
        "end": "\r\n",
        "checksum": "xor",
        "key_field": 1,
        "tags": (
            SerialLineTagConfig(name="CH1", key="1", field=2, range=(0.0, 100.0)),
            SerialLineTagConfig(name="CH2", key="2", field=2, scale=0.1),
        ),
    }
    base.update(kw)
    return SerialLineDeviceConfig(**base)  # type: ignore[arg-type]


def sentence(body: bytes) -> bytes:
    return b"$" + body + b"*" + checksum_text("xor", body) + b"\r\n"


def test_one_line_per_channel_fills_only_the_tags_of_that_channel() -> None:
    proto = LineProtocol(gas_controller())
    readings = proto.feed(sentence(b"GAS,1,12.5,LEL") + sentence(b"GAS,2,250,PPM"))
    assert [(r.tag, r.value, r.quality) for r in readings] == [
        (0, 12.5, Quality.GOOD),
        (1, 25.0, Quality.GOOD),
    ]


def test_a_wrong_checksum_rejects_the_frame_and_counts_it() -> None:
    proto = LineProtocol(gas_controller())
    good = sentence(b"GAS,1,12.5,LEL")
    bad = good.replace(b"12.5", b"92.5")
    assert proto.feed(bad) == []
    assert proto.rejected == 1
    assert len(proto.feed(good)) == 1


def test_a_non_numeric_or_missing_field_is_bad_device_and_out_of_range_is_bad_range() -> None:
    proto = LineProtocol(gas_controller())
    r = proto.feed(sentence(b"GAS,1,----,LEL") + sentence(b"GAS,1") + sentence(b"GAS,1,120,LEL"))
    assert [q.quality for q in r] == [Quality.BAD_DEVICE, Quality.BAD_DEVICE, Quality.BAD_RANGE]
    assert all(math.isnan(q.value) for q in r)


def test_a_regex_with_named_groups_parses_an_analyser_line_and_rejects_others() -> None:
    cfg = SerialLineDeviceConfig(
        name="o2",
        serial_port="p",
        parse="regex",
        pattern=r"O2=(?P<o2>[-\d.]+)%\s+T=(?P<t>[-\d.]+)C",
        checksum="crc16_modbus",
        checksum_separator=";",
        tags=(
            SerialLineTagConfig(name="O2", field="o2"),
            SerialLineTagConfig(name="T", field="t"),
        ),
    )
    proto = LineProtocol(cfg)
    body = b"O2=20.9% T=-3.5C"
    line = body + b";" + checksum_text("crc16_modbus", body) + b"\r\n"
    readings = proto.feed(b"noise\r\n" + line)
    assert [(r.tag, r.value) for r in readings] == [(0, 20.9), (1, -3.5)]
    assert proto.rejected == 1  # "noise" has no checksum


def test_settings_that_cannot_work_are_reported_by_key() -> None:
    cfg = gas_controller(parse="regex", pattern="(?P<v>\\d+", key_field=None)
    keys = [k for k, _, _ in config_problems(cfg)]
    assert "pattern" in keys
    assert 'tags[0] "CH1".key' in keys
    assert 'tags[0] "CH1".field' in keys
    with pytest.raises(DriverConfigError, match="gas"):
        LineProtocol(cfg)


@pytest.mark.parametrize(
    ("raw", "grammar", "want"),
    [
        ("66.6", "decimal", 66.6), ("-1.5e3", "decimal", -1500.0), (".5", "decimal", 0.5),
        ("+7", "decimal", 7.0), ("6_6.6", "decimal", None), ("0x1A", "decimal", None),
        ("nan", "decimal", None), ("inf", "decimal", None), ("1e", "decimal", None),
        (" 5", "decimal", None), ("١٢", "decimal", None), ("", "decimal", None),
        ("1A", "hex", 26.0), ("0x1a", "hex", 26.0), ("1_A", "hex", None), ("-1A", "hex", None),
    ],
)  # fmt: skip
def test_numbers_follow_a_strict_grammar(raw: str, grammar: str, want: float | None) -> None:
    got = parse_number(raw, grammar)
    assert (math.isnan(got) and want is None) or got == want
