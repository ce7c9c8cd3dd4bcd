"""Fault isolation against real peers: circuit breaker, refused addresses, shared gateway
connections, a device closing the connection mid-poll, garbage and bad CRCs on an RTU line."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers import ModbusDevice, Quality, SampleBatch, build_device
from drivers.config import (
    ExcludeConfig,
    ModbusRtuDeviceConfig,
    ModbusTcpDeviceConfig,
    SerialPortConfig,
    TagConfig,
)
from tests.drivers.peers import (
    fault_proxy,
    free_port,
    pty_pair,
    serial_relay,
    serial_server,
    sim_device,
    stepping_clock,
    tcp_server,
)

pytestmark = pytest.mark.integration

TIMEOUT_S = 0.2


def tcp(port: int, tags: list[TagConfig], *, name: str = "plc", unit_id: int = 1,
        first: int = 0, **kw: object) -> ModbusDevice:  # fmt: skip
    cfg = ModbusTcpDeviceConfig(
        name=name, host="127.0.0.1", port=port, unit_id=unit_id, timeout_s=TIMEOUT_S,
        tags=tuple(tags), **kw,  # type: ignore[arg-type]
    )  # fmt: skip
    device = build_device(cfg, tag_index={t.name: first + i for i, t in enumerate(tags)},
                          serial_ports={}, monotonic=stepping_clock())  # fmt: skip
    assert isinstance(device, ModbusDevice)
    return device


def names(batch: SampleBatch) -> list[str]:
    return [Quality(int(q)).name for q in batch.quality]


def test_a_refused_tag_is_split_out_read_alone_and_the_rest_stays_one_block() -> None:
    # the server has holding registers 0..41: 43 is refused (exception 2)
    tags = [TagConfig(name="a", address=40), TagConfig(name="b", address=41),
            TagConfig(name="c", address=43)]  # fmt: skip

    async def main() -> list[tuple[list[str], list[tuple[int, int]]]]:
        port = free_port()
        out = []
        async with tcp_server(port), tcp(port, tags) as device:
            assert [(r.address, r.count) for r in device.requests] == [(40, 4)]
            for _ in range(2):
                batch = await device.poll()
                out.append((names(batch), [(r.address, r.count) for r in device.requests]))
                assert device.online
        return out

    first, second = asyncio.run(main())
    assert first == (["GOOD", "GOOD", "BAD_DEVICE"], [(40, 2), (43, 1)])
    assert second == first


def two_blocks(unit_id: int = 1) -> SimDevice:
    """Holding 0..9 and 20..29 exist; 10..19 do not (reading them is refused)."""
    blocks = [
        SimData(address=0, values=list(range(100, 110)), datatype=DataType.REGISTERS),
        SimData(address=20, values=list(range(200, 210)), datatype=DataType.REGISTERS),
    ]
    bits = [SimData(address=0, values=[False] * 16, datatype=DataType.BITS)]
    return SimDevice(id=unit_id, simdata=(bits, bits, blocks, blocks[:1]))  # fmt: skip


def test_a_refused_gap_is_learned_and_planned_around() -> None:
    tags = [TagConfig(name="a", address=9), TagConfig(name="b", address=20)]

    async def main() -> tuple[list[str], list[float], list[tuple[int, int]], list[str]]:
        port = free_port()
        async with tcp_server(port, two_blocks()), tcp(port, tags, max_gap=20) as device:
            batch = await device.poll()  # (9, 12) refused, then 9 and 20 read alone
            plan = [(r.address, r.count) for r in device.requests]
            again = await device.poll()
            return names(batch), list(batch.value), plan, names(again)

    first, values, plan, again = asyncio.run(main())
    assert first == ["GOOD", "GOOD"]
    assert values == [109.0, 200.0]
    assert plan == [(9, 1), (20, 1)]
    assert again == ["GOOD", "GOOD"]


def test_configured_exclusions_keep_block_reads_off_those_addresses() -> None:
    tags = [TagConfig(name="a", address=9), TagConfig(name="b", address=20)]

    async def main() -> tuple[list[str], int]:
        port = free_port()
        exclude = (ExcludeConfig(table="holding", address=10, count=10),)
        async with (
            tcp_server(port, two_blocks()),
            tcp(port, tags, max_gap=20, exclude=exclude) as device,
        ):
            return names(await device.poll()), len(device.requests)

    assert asyncio.run(main()) == (["GOOD", "GOOD"], 2)


def test_unit_ids_behind_one_gateway_share_one_connection_and_one_bus() -> None:
    async def main() -> tuple[list[float], list[float], int, bool]:
        port, upstream = free_port(), free_port()
        d1 = tcp(port, [TagConfig(name="u1", address=0)], name="d1", unit_id=1)
        d2 = tcp(port, [TagConfig(name="u2", address=0)], name="d2", unit_id=2, first=1)
        server = tcp_server(upstream, sim_device(1), sim_device(2, holding_offset=7))
        async with server, fault_proxy(port, upstream) as accepted, d1, d2:
            b1, b2 = await asyncio.gather(d1.poll(), d2.poll())
            c1, c2 = await asyncio.gather(d1.poll(), d2.poll())
            return [*b1.value, *c1.value], [*b2.value, *c2.value], accepted[0], d1.bus == d2.bus

    v1, v2, connections, same_bus = asyncio.run(main())
    assert v1 == [0x1234, 0x1234]
    assert v2 == [0x1234 + 7, 0x1234 + 7]
    assert connections == 1
    assert same_bus


def test_a_device_closing_the_connection_mid_poll_gives_bad_comm_then_recovers() -> None:
    tags = [TagConfig(name="h", address=0), TagConfig(name="i", table="input", address=0)]

    async def main() -> list[tuple[list[str], bool]]:
        port, upstream = free_port(), free_port()
        out = []
        async with (
            tcp_server(upstream),
            fault_proxy(port, upstream, close_after_replies=1),
            tcp(port, tags) as device,
        ):
            for _ in range(2):
                out.append((names(await device.poll()), device.online))
        return out

    assert asyncio.run(main()) == [(["GOOD", "BAD_COMM"], False), (["GOOD", "GOOD"], True)]


def rtu(path: str, tags: list[TagConfig]) -> ModbusDevice:
    port = SerialPortConfig(name="line", path=path, baudrate=115200)
    cfg = ModbusRtuDeviceConfig(name="rtu", serial_port="line", unit_id=1, timeout_s=TIMEOUT_S,
                                tags=tuple(tags))  # fmt: skip
    device = build_device(cfg, tag_index={t.name: i for i, t in enumerate(tags)},
                          serial_ports={"line": port}, monotonic=stepping_clock())  # fmt: skip
    assert isinstance(device, ModbusDevice)
    return device


def corrupt_crc(n: int, data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0xFF]) if n == 0 else data


def garbage_first(n: int, data: bytes) -> bytes:
    return b"\x00\xff\x13\x37garbage" + data if n == 0 else data


@pytest.mark.parametrize("mutate", [corrupt_crc, garbage_first], ids=["bad-crc", "garbage"])
def test_a_damaged_rtu_reply_never_gives_a_wrong_value_and_the_next_poll_reads_good(
    tmp_path: Path, mutate: object
) -> None:
    tags = [TagConfig(name="a", address=0), TagConfig(name="b", address=34)]

    async def main(agent: str, near: str, far: str, server: str) -> list[SampleBatch]:
        async with (
            serial_server(server, sim_device(1)),
            serial_relay(near, far, mutate),  # type: ignore[arg-type]
            rtu(agent, tags) as device,
        ):
            return [await device.poll() for _ in range(3)]

    (tmp_path / "1").mkdir()
    (tmp_path / "2").mkdir()
    with pty_pair(tmp_path / "1") as (agent, near), pty_pair(tmp_path / "2") as (far, server):
        batches = asyncio.run(main(agent, near, far, server))
    for batch in batches:
        for q, v, want in zip(batch.quality, batch.value, (0x1234, 500), strict=True):
            assert (q == Quality.GOOD and v == want) or (q == Quality.BAD_COMM and v != v)
    assert names(batches[-1]) == ["GOOD", "GOOD"]
    if mutate is corrupt_crc:
        assert names(batches[0]) == ["BAD_COMM", "BAD_COMM"]
