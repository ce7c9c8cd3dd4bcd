"""The sans-I/O Modbus codec: framings against published examples, resynchronisation on
garbage whatever the chunking, and reply checks."""

from __future__ import annotations

import asyncio
import itertools
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import ModbusDevice, Quality, build_device
from drivers.config import ModbusRtuDeviceConfig, SerialPortConfig, TagConfig
from drivers.mbproto import (
    AsciiDecoder,
    ExceptionReply,
    Frame,
    FramingError,
    MbapDecoder,
    ReplyMismatch,
    RtuDecoder,
    ascii_frame,
    check_reply,
    crc16,
    read_request,
    rtu_frame,
    write_coils,
    write_registers,
)
from tests.drivers.peers import pty_pair, serial_relay, serial_server, sim_device, stepping_clock


def test_crc_and_lrc_match_published_examples() -> None:
    # Modbus over serial line spec: 01 03 00 00 00 0A -> CRC C5 CD (sent low byte first)
    assert rtu_frame(1, bytes.fromhex("030000000a")).hex() == "01030000000ac5cd"
    assert crc16(b"123456789") == 0x4B37
    # ASCII: 11 03 00 6B 00 03 -> LRC 7E
    assert ascii_frame(0x11, bytes.fromhex("03006b0003")) == b":1103006B00037E\r\n"


def chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


REPLY = bytes([3, 4, 0x12, 0x34, 0x00, 0x42])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40), st.binary(max_size=20), st.lists(st.integers(0, 200), max_size=8))
def test_rtu_finds_a_reply_after_any_garbage_in_any_chunking(
    before: bytes, after: bytes, cuts: list[int]
) -> None:
    stream = before + rtu_frame(7, REPLY) + after
    decoder = RtuDecoder()
    frames = [f for part in chunks(stream, cuts) for f in decoder.feed(part)]
    assert Frame(None, 7, REPLY) in frames
    assert all(crc16(bytes([f.unit]) + f.pdu) is not None for f in frames)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(0, 400), max_size=8))
def test_garbage_alone_never_raises_and_is_counted(data: bytes, cuts: list[int]) -> None:
    for decoder in (RtuDecoder(), AsciiDecoder()):
        for part in chunks(data, cuts):
            decoder.feed(part)
        assert decoder.garbage <= len(data)


def test_ascii_rejects_spaces_bad_hex_and_a_wrong_lrc() -> None:
    good = ascii_frame(1, REPLY)
    decoder = AsciiDecoder()
    assert decoder.feed(b":01 03 02\r\n" + b":ZZ\r\n" + good[:-4] + b"00\r\n" + good) == [
        Frame(None, 1, REPLY)
    ]
    assert decoder.crc_errors == 1


def test_mbap_frames_come_out_whole_and_a_bad_header_is_fatal() -> None:
    decoder = MbapDecoder()
    frame = bytes.fromhex("0001000000070103041234004200")[:-1]
    assert decoder.feed(frame[:5]) == []
    assert decoder.feed(frame[5:]) == [Frame(1, 1, bytes.fromhex("030412340042"))]
    with pytest.raises(FramingError):
        decoder.feed(bytes.fromhex("000100050003010300"))


def test_reply_checks() -> None:
    req = read_request("holding", 0, 2)
    assert check_reply(req, bytes.fromhex("030412340042")) == [0x1234, 0x42]
    for pdu, reason in [
        ("040412340042", "function_code"),
        ("0600001a0a", "write_echo"),
        ("0306123400420007", "byte_count"),
        ("03041234004200", "length"),
    ]:
        with pytest.raises(ReplyMismatch) as info:
            check_reply(req, bytes.fromhex(pdu))
        assert info.value.reason == reason
    with pytest.raises(ExceptionReply) as exc:
        check_reply(req, bytes.fromhex("8302"))
    assert exc.value.code == 2
    bits = read_request("coil", 0, 10)
    assert check_reply(bits, bytes.fromhex("01020d02")) == [True, False, True, True] + [
        False
    ] * 5 + [True]
    write = write_coils(5, [True])
    assert check_reply(write, write.pdu) == []
    with pytest.raises(ReplyMismatch):
        check_reply(write, write_coils(5, [False]).pdu)
    many = write_registers(10, [1, 2, 3])
    assert check_reply(many, bytes.fromhex("10000a0003")) == []


@pytest.mark.integration
def test_a_line_full_of_random_garbage_never_gives_a_wrong_value(tmp_path: Path) -> None:
    rng = random.Random(11)
    tags = [TagConfig(name="a", address=0), TagConfig(name="b", address=34)]

    def mutate(n: int, data: bytes) -> bytes:
        roll = rng.random()
        if roll < 0.15:
            return rng.randbytes(rng.randint(1, 30)) + data
        if roll < 0.25:
            k = rng.randrange(len(data))
            return data[:k] + bytes([data[k] ^ (1 << rng.randrange(8))]) + data[k + 1 :]
        if roll < 0.3:
            return rng.randbytes(rng.randint(1, 300))
        return data

    async def main(agent: str, near: str, far: str, server: str) -> list[list[str]]:
        port = SerialPortConfig(name="line", path=agent, baudrate=115200)
        cfg = ModbusRtuDeviceConfig(name="rtu", serial_port="line", timeout_s=0.15,
                                    tags=tuple(tags))  # fmt: skip
        device = build_device(cfg, tag_index={"a": 0, "b": 1}, serial_ports={"line": port},
                              monotonic=stepping_clock())  # fmt: skip
        assert isinstance(device, ModbusDevice)
        out = []
        async with serial_server(server, sim_device(1)), serial_relay(near, far, mutate), device:
            for _ in range(30):
                batch = await device.poll()
                for q, v, want in zip(batch.quality, batch.value, (0x1234, 500), strict=True):
                    assert (q == Quality.GOOD and v == want) or (q != Quality.GOOD and v != v)
                out.append([Quality(int(q)).name for q in batch.quality])
        return out

    (tmp_path / "1").mkdir()
    (tmp_path / "2").mkdir()
    with pty_pair(tmp_path / "1") as (agent, near), pty_pair(tmp_path / "2") as (far, server):
        out = asyncio.run(main(agent, near, far, server))
    assert sum(q == ["GOOD", "GOOD"] for q in out) >= 8  # and the line still works
