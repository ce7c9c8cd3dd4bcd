"""Refusals on maps whose tags overlap (a uint32 on 10..11 with a uint16 on 10, bit tags of one
register), against real peers: a pymodbus server with an unmapped register, and a raw Modbus
TCP peer that refuses one register for a while. The tag whose own registers read fine stays in
its block; the refusal is forgotten as soon as the refused tag reads fine again."""

from __future__ import annotations

import asyncio
import math
import struct

import pytest

from drivers import ModbusDevice, Quality, build_device
from drivers.config import ModbusTcpDeviceConfig, TagConfig
from tests.drivers.peers import ManualClock, free_port, mbap, scripted_tcp_peer, tcp_server
from tests.drivers.test_refusals import regs, sim

TAGS = [
    TagConfig(name="wide", address=10, type="uint32"),  # 10..11, 11 refused
    TagConfig(name="low", address=10),  # 10: readable, inside "wide"
    TagConfig(name="first", address=0, type="uint32"),
    TagConfig(name="b0", address=12, type="bool", bit=0),  # two bits of register 12
    TagConfig(name="b2", address=12, type="bool", bit=2),
    TagConfig(name="next", address=13),
]


def device(port: int, clock: ManualClock) -> ModbusDevice:
    cfg = ModbusTcpDeviceConfig(name="plc", host="127.0.0.1", port=port, timeout_s=0.5,
                                tags=tuple(TAGS))  # fmt: skip
    built = build_device(cfg, tag_index={t.name: i for i, t in enumerate(TAGS)},
                         serial_ports={}, monotonic=clock)  # fmt: skip
    assert isinstance(built, ModbusDevice)
    return built


@pytest.mark.integration
def test_a_readable_tag_under_a_refused_wider_tag_stays_in_its_block() -> None:
    async def main() -> tuple[list[tuple[int, int]], list[float], list[str], object]:
        port, clock = free_port(), ManualClock()
        peer = sim(regs((0, 11), (12, 20)), regs((0, 1)))  # holding 11 unmapped
        async with tcp_server(port, peer), device(port, clock) as plc:
            await plc.poll()
            batch = await plc.poll()
            plan = sorted((r.address, r.count) for r in plc.requests)
            qualities = [Quality(int(q)).name for q in batch.quality]
            return plan, list(batch.value), qualities, plc.health()["refusals"]

    plan, values, qualities, refusals = asyncio.run(main())
    # optimum: 0..10 (gap 2..9 bridged), 12..13, and the refused uint32 alone
    assert plan == [(0, 11), (10, 2), (12, 2)]
    assert qualities == ["BAD_DEVICE", "GOOD", "GOOD", "GOOD", "GOOD", "GOOD"]
    assert math.isnan(values[0])
    assert values[1:] == [10.0, float(0 << 16 | 1), 0.0, 1.0, 13.0]  # 12 = 0b1100
    assert refusals == [{"table": "holding", "start": 11, "end": 12, "code": 2, "kind": "tag"}]


@pytest.mark.integration
def test_a_transient_refusal_under_overlapping_tags_is_forgotten_within_two_polls() -> None:
    async def main() -> list[tuple[int, list[str]]]:
        port, clock = free_port(), ManualClock()
        refusing = [False]

        def reply(_n: int, tid: int, unit: int, pdu: bytes) -> list[bytes]:
            _fc, address, count = struct.unpack(">BHH", pdu[:5])
            if refusing[0] and address <= 11 < address + count:
                return [mbap(tid, unit, bytes([0x83, 2]))]
            body = b"".join(struct.pack(">H", address + i) for i in range(count))
            return [mbap(tid, unit, bytes([3, len(body)]) + body)]

        out = []
        async with scripted_tcp_peer(port, reply), device(port, clock) as plc:
            for step in range(6):
                refusing[0] = step in (1, 2)  # a program download refuses 11 for two polls
                clock.now = float(step)
                batch = await plc.poll()
                out.append((len(plc.requests), [Quality(int(q)).name for q in batch.quality]))
        return out

    out = asyncio.run(main())
    assert out[0] == (1, ["GOOD"] * 6)  # 0..13 in one request
    assert out[1] == (3, ["BAD_DEVICE"] + ["GOOD"] * 5)  # 11 isolated: 0..10, wide, 12..13
    assert out[2] == (3, ["BAD_DEVICE"] + ["GOOD"] * 5)
    assert out[3] == (1, ["GOOD"] * 6)  # wide read fine alone: forgotten, merged
    assert out[4:] == [(1, ["GOOD"] * 6)] * 2
