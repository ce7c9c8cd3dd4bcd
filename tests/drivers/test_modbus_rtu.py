"""ModbusDevice over RTU: real bytes through a socat pty pair to a pymodbus serial server."""

from __future__ import annotations

import asyncio
import os
import termios
import time
from pathlib import Path

import numpy as np
import pytest
import serial

from drivers import DriverConfigError, ModbusDevice, Quality, SampleBatch, build_device
from drivers.config import ModbusRtuDeviceConfig, SerialPortConfig, TagConfig
from tests.drivers.peers import (
    EXPECTED,
    pty_pair,
    same,
    serial_server,
    sim_device,
    stepping_clock,
)

pytestmark = pytest.mark.integration

TIMEOUT_S = 0.3


def rtu_device(
    path: str, unit_id: int, tags: list[TagConfig], *, name: str = "rtu", first_index: int = 0
) -> ModbusDevice:
    port = SerialPortConfig(name="line1", path=path, baudrate=115200)
    cfg = ModbusRtuDeviceConfig(
        name=name, serial_port="line1", unit_id=unit_id, timeout_s=TIMEOUT_S, tags=tuple(tags)
    )
    index = {t.name: first_index + i for i, t in enumerate(tags)}
    return build_device(
        cfg, tag_index=index, serial_ports={"line1": port}, monotonic=stepping_clock()
    )


def names(batch: SampleBatch) -> list[str]:
    return [Quality(int(q)).name for q in batch.quality]


def test_every_type_and_word_order_reads_correctly_over_rtu(tmp_path: Path) -> None:
    tags = [t for t, _, _ in EXPECTED]

    async def main(a: str, b: str) -> SampleBatch:
        async with serial_server(b, sim_device(1)), rtu_device(a, 1, tags) as device:
            batch = await device.poll()
            assert device.online
            return batch

    with pty_pair(tmp_path) as (a, b):
        batch = asyncio.run(main(a, b))
    for i, (tag, value, quality) in enumerate(EXPECTED):
        assert Quality(int(batch.quality[i])).name == quality, tag.name
        assert same(float(batch.value[i]), value), tag.name


def test_two_units_on_one_line_share_it_without_mixing_answers(tmp_path: Path) -> None:
    tags1 = [TagConfig(name="u1", address=0), TagConfig(name="u1-missing", address=500)]
    tags2 = [TagConfig(name="u2", address=0)]

    async def main(a: str, b: str) -> list[SampleBatch]:
        server = serial_server(b, sim_device(1), sim_device(2, holding_offset=7))
        dev1 = rtu_device(a, 1, tags1, name="d1")
        dev2 = rtu_device(a, 2, tags2, name="d2", first_index=2)
        async with server, dev1, dev2:
            out: list[SampleBatch] = []
            for _ in range(3):  # polled concurrently: the shared line serialises them
                out += await asyncio.gather(dev1.poll(), dev2.poll())
            return out

    with pty_pair(tmp_path) as (a, b):
        batches = asyncio.run(main(a, b))
    for b1, b2 in zip(batches[::2], batches[1::2], strict=True):
        assert names(b1) == ["GOOD", "BAD_DEVICE"]
        assert b1.value[0] == 0x1234
        assert names(b2) == ["GOOD"]
        assert b2.value[0] == 0x1234 + 7
        assert list(b2.tag) == [2]


def test_a_silent_line_gives_bad_comm_within_the_timeout_then_recovers(tmp_path: Path) -> None:
    tags = [TagConfig(name="a", address=0), TagConfig(name="b", table="input", address=0)]

    async def main(a: str, b: str) -> list[tuple[list[str], bool, float]]:
        out = []
        async with rtu_device(a, 1, tags) as device:
            start = time.monotonic()
            batch = await device.poll()  # nothing answers on the other end
            out.append((names(batch), device.online, time.monotonic() - start))
            async with serial_server(b, sim_device(1)):
                await asyncio.sleep(0.05)
                start = time.monotonic()
                batch = await device.poll()
                out.append((names(batch), device.online, time.monotonic() - start))
                assert not np.isnan(batch.value).any()
        return out

    with pty_pair(tmp_path) as (a, b):
        (silent, s_online, s_elapsed), (back, b_online, _) = asyncio.run(main(a, b))
    assert silent == ["BAD_COMM", "BAD_COMM"]
    assert not s_online
    assert TIMEOUT_S * 0.9 <= s_elapsed < TIMEOUT_S + 0.4  # one timeout, not one per request
    assert back == ["GOOD", "GOOD"]
    assert b_online


def test_a_missing_serial_device_path_gives_bad_comm(tmp_path: Path) -> None:
    async def main() -> tuple[list[str], bool]:
        path = str(tmp_path / "no-such-tty")
        async with rtu_device(path, 1, [TagConfig(name="a", address=0)]) as device:
            return names(await device.poll()), device.online

    assert asyncio.run(main()) == (["BAD_COMM"], False)


def test_an_rtu_device_on_an_undeclared_serial_port_is_a_config_error() -> None:
    cfg = ModbusRtuDeviceConfig(
        name="rtu", serial_port="nope", tags=(TagConfig(name="a", address=0),)
    )
    with pytest.raises(DriverConfigError, match="serial_port 'nope'"):
        build_device(cfg, tag_index={"a": 0}, serial_ports={})


def test_a_port_that_refuses_its_line_settings_is_bad_comm_with_a_reason_not_a_crash() -> None:
    # A Linux pty once opened without parity refuses even parity with termios.error (EINVAL,
    # and no OSError): a real refusal on open, as a USB adapter gives for settings it lacks.
    master, slave = os.openpty()
    try:
        path = os.ttyname(slave)
        serial.Serial(path, 9600, parity=serial.PARITY_NONE, timeout=0).close()
        with pytest.raises(termios.error):
            serial.Serial(path, 9600, parity=serial.PARITY_EVEN, timeout=0)
        port = SerialPortConfig(name="line1", path=path, baudrate=9600, parity="E")
        cfg = ModbusRtuDeviceConfig(
            name="rtu", serial_port="line1", unit_id=1, timeout_s=TIMEOUT_S,
            tags=(TagConfig(name="t", address=0, type="uint16"),),
        )  # fmt: skip
        device = build_device(cfg, tag_index={"t": 0}, serial_ports={"line1": port})
        assert isinstance(device, ModbusDevice)

        async def main() -> SampleBatch:
            async with device:
                return await device.poll()

        batch = asyncio.run(main())
        assert names(batch) == ["BAD_COMM"]
        assert device.lost_reason == "port_settings"
    finally:
        os.close(master)
        os.close(slave)
