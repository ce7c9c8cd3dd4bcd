"""Every reply is checked against its request: a malicious Modbus TCP peer (raw asyncio, no
pymodbus) sends the other function code, wrong lengths, other transaction and unit ids, write
echoes and extra replies; RTU over TCP and Modbus ASCII read through real pymodbus servers."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from pymodbus.framer import FramerType

from drivers import ModbusDevice, Quality, build_device
from drivers.config import ModbusRtuDeviceConfig, ModbusTcpDeviceConfig, SerialPortConfig, TagConfig
from tests.drivers.peers import (
    EXPECTED,
    ManualClock,
    free_port,
    mbap,
    pty_pair,
    registers_pdu,
    rtu,
    same,
    scripted_rtu_peer,
    scripted_tcp_peer,
    serial_server,
    sim_device,
    stepping_clock,
    tcp_server,
)

pytestmark = pytest.mark.integration

TAGS = [TagConfig(name="a", address=0), TagConfig(name="b", address=1)]
HONEST = [0x1234, 0x0042]


def honest(tid: int, unit: int) -> bytes:
    return mbap(tid, unit, registers_pdu(3, HONEST))


Bad = Callable[[int, int], list[bytes]]
ATTACKS: dict[str, tuple[Bad, str]] = {
    "input function code to a holding read": (
        lambda tid, unit: [mbap(tid, unit, registers_pdu(4, HONEST))], "function_code"),
    "write echo read as a value": (
        lambda tid, unit: [mbap(tid, unit, bytes.fromhex("0600001a0a"))], "write_echo"),
    "more registers than asked": (
        lambda tid, unit: [mbap(tid, unit, registers_pdu(3, [*HONEST, 7]))], "byte_count"),
    "fewer registers than asked": (
        lambda tid, unit: [mbap(tid, unit, registers_pdu(3, HONEST[:1]))], "byte_count"),
    "byte count disagreeing with the data": (
        lambda tid, unit: [mbap(tid, unit, bytes([3, 4]) + b"\x12\x34\x00\x42\x99\x99")],
        "length"),
    "another unit id with our transaction id": (
        lambda tid, unit: [mbap(tid, unit + 1, registers_pdu(3, HONEST))], "unit_id"),
}  # fmt: skip


def tcp(port: int, **kw: object) -> ModbusDevice:
    cfg = ModbusTcpDeviceConfig(name="plc", host="127.0.0.1", port=port, timeout_s=0.3,
                                tags=tuple(TAGS), **kw)  # type: ignore[arg-type]  # fmt: skip
    device = build_device(cfg, tag_index={"a": 0, "b": 1}, serial_ports={},
                          monotonic=stepping_clock())  # fmt: skip
    assert isinstance(device, ModbusDevice)
    return device


def run(reply: Callable[[int, int, int, bytes], list[bytes]], polls: int = 2
        ) -> tuple[list[tuple[list[str], list[float]]], ModbusDevice, int]:  # fmt: skip
    async def main() -> tuple[list[tuple[list[str], list[float]]], ModbusDevice, int]:
        port = free_port()
        out = []
        async with scripted_tcp_peer(port, reply) as accepted, tcp(port) as device:
            for _ in range(polls):
                batch = await device.poll()
                out.append(([Quality(int(q)).name for q in batch.quality], list(batch.value)))
            return out, device, accepted[0]

    return asyncio.run(main())


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_a_reply_that_does_not_answer_the_request_is_bad_comm_and_counted(attack: str) -> None:
    bad, reason = ATTACKS[attack]

    def reply(n: int, tid: int, unit: int, _pdu: bytes) -> list[bytes]:
        return bad(tid, unit) if n == 0 else [honest(tid, unit)]

    polls, device, accepted = run(reply)
    (first, _), (second, values) = polls
    assert first == ["BAD_COMM", "BAD_COMM"]
    assert (second, values) == (["GOOD", "GOOD"], [float(v) for v in HONEST])
    assert device.bad_replies == {reason: 1}
    assert device.online and accepted == 1  # the device answered: link kept, not lost


def test_an_extra_reply_with_the_next_transaction_id_never_becomes_the_next_answer() -> None:
    def reply(n: int, tid: int, unit: int, _pdu: bytes) -> list[bytes]:
        if n == 0:  # the answer, then a forged answer to the request that comes next
            return [honest(tid, unit), mbap(tid + 1, unit, registers_pdu(3, [6666, 6666]))]
        return [honest(tid, unit)]

    polls, device, _ = run(reply, polls=3)
    assert all(p == (["GOOD", "GOOD"], [float(v) for v in HONEST]) for p in polls)
    assert device.link.counters["stray"] == 1


def test_replies_with_other_transaction_ids_are_skipped_until_ours_arrives() -> None:
    def reply(n: int, tid: int, unit: int, _pdu: bytes) -> list[bytes]:
        others = [mbap((tid + k) % 0xFFFF, unit, registers_pdu(3, [9, 9])) for k in (7, 8)]
        return [*others, honest(tid, unit), honest(tid, unit)]  # and a late duplicate

    polls, device, _ = run(reply, polls=3)
    assert all(p == (["GOOD", "GOOD"], [float(v) for v in HONEST]) for p in polls)
    assert device.link.counters["stray"] == 9  # 2 others + 1 duplicate per poll


def test_an_unframeable_reply_drops_the_connection_with_reason_framing() -> None:
    def reply(n: int, tid: int, unit: int, _pdu: bytes) -> list[bytes]:
        if n == 0:
            return [struct.pack(">HHHB", tid, 7, 5, unit) + b"\x03\x02\x00\x01"]  # protocol 7
        return [honest(tid, unit)]

    polls, device, accepted = run(reply)
    (first, _), (second, _) = polls
    assert first == ["BAD_COMM", "BAD_COMM"] and second == ["GOOD", "GOOD"]
    assert accepted == 2 and device.link.counters["framing"] == 1


def test_the_reason_of_a_lost_device_is_kept_until_it_answers() -> None:
    async def main() -> list[str]:
        port, clock = free_port(), ManualClock()
        reasons = []
        silent: Callable[[int, int, int, bytes], list[bytes]] = lambda *_: []  # noqa: E731
        async with scripted_tcp_peer(port, silent):
            cfg = ModbusTcpDeviceConfig(name="plc", host="127.0.0.1", port=port, timeout_s=0.2,
                                        tags=tuple(TAGS))  # fmt: skip
            device = build_device(cfg, tag_index={"a": 0, "b": 1}, serial_ports={},
                                  monotonic=clock)  # fmt: skip
            async with device:
                await device.poll()
                reasons.append(device.lost_reason)  # type: ignore[union-attr]
        async with tcp_server(port):
            clock.now = 5.0
            async with device:
                await device.poll()
                reasons.append(device.lost_reason)  # type: ignore[union-attr]
        return reasons

    assert asyncio.run(main()) == ["timeout", ""]


# -- RTU over TCP and ASCII -------------------------------------------------------------------


def test_rtu_over_tcp_reads_every_type_through_a_serial_device_server() -> None:
    tags = [t for t, _, _ in EXPECTED]

    async def main() -> tuple[list[float], list[int], str]:
        port = free_port()
        cfg = ModbusTcpDeviceConfig(name="dtu", host="127.0.0.1", port=port, framing="rtu",
                                    timeout_s=0.5, tags=tuple(tags))  # fmt: skip
        device = build_device(cfg, tag_index={t.name: i for i, t in enumerate(tags)},
                              serial_ports={})  # fmt: skip
        async with tcp_server(port, sim_device(1), framer=FramerType.RTU), device:
            batch = await device.poll()
            return list(batch.value), list(batch.quality), device.bus

    values, qualities, bus = asyncio.run(main())
    for (tag, want, quality), v, q in zip(EXPECTED, values, qualities, strict=True):
        assert Quality(q).name == quality, tag.name
        assert same(v, want), tag.name
    assert bus.startswith("rtu-tcp:")


def test_modbus_ascii_on_a_serial_line_reads_every_type(tmp_path: Path) -> None:
    tags = [t for t, _, _ in EXPECTED]

    async def main(agent: str, server: str) -> tuple[list[float], list[int]]:
        port = SerialPortConfig(name="line", path=agent, baudrate=115200, modbus_framing="ascii")
        cfg = ModbusRtuDeviceConfig(name="ascii", serial_port="line", timeout_s=0.5,
                                    tags=tuple(tags))  # fmt: skip
        device = build_device(cfg, tag_index={t.name: i for i, t in enumerate(tags)},
                              serial_ports={"line": port})  # fmt: skip
        async with serial_server(server, sim_device(1), framer=FramerType.ASCII), device:
            batch = await device.poll()
            return list(batch.value), list(batch.quality)

    with pty_pair(tmp_path) as (agent, server):
        values, qualities = asyncio.run(main(agent, server))
    for (tag, want, quality), v, q in zip(EXPECTED, values, qualities, strict=True):
        assert Quality(q).name == quality, tag.name
        assert same(v, want), tag.name


def test_an_rtu_reply_with_the_other_function_code_or_from_another_unit_is_never_a_value(
    tmp_path: Path,
) -> None:
    def reply(n: int, _tid: int, unit: int, _pdu: bytes) -> list[bytes]:
        if n == 0:
            return [rtu(unit, registers_pdu(4, HONEST))]  # input registers to a holding read
        if n == 1:  # a neighbour's late answer first, then ours
            other = rtu(unit + 1, registers_pdu(3, [6666, 6666]))
            return [other, rtu(unit, registers_pdu(3, HONEST))]
        return [rtu(unit, registers_pdu(3, HONEST))]

    async def main(agent: str, far: str) -> tuple[list[list[str]], dict[str, int], int]:
        port = SerialPortConfig(name="line", path=agent, baudrate=115200)
        cfg = ModbusRtuDeviceConfig(name="rtu", serial_port="line", timeout_s=0.3,
                                    tags=tuple(TAGS))  # fmt: skip
        device = build_device(cfg, tag_index={"a": 0, "b": 1}, serial_ports={"line": port},
                              monotonic=stepping_clock())  # fmt: skip
        assert isinstance(device, ModbusDevice)
        out = []
        async with scripted_rtu_peer(far, reply), device:
            for _ in range(3):
                batch = await device.poll()
                out.append([Quality(int(q)).name for q in batch.quality])
                if out[-1] == ["GOOD", "GOOD"]:
                    assert list(batch.value) == [float(v) for v in HONEST]
            return out, device.bad_replies, device.link.counters["unit_id"]

    with pty_pair(tmp_path) as (agent, far):
        out, bad, other_unit = asyncio.run(main(agent, far))
    assert out == [["BAD_COMM", "BAD_COMM"], ["GOOD", "GOOD"], ["GOOD", "GOOD"]]
    assert bad == {"function_code": 1} and other_unit == 1
