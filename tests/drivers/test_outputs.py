"""Alarm outputs written to a real pymodbus server and read back from it with an independent
client (pymodbus'), a peer that does not keep what was written, and the config checks."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient

from drivers.config import ModbusTcpDeviceConfig, SerialLineDeviceConfig, TagConfig
from drivers.errors import DriverConfigError
from drivers.outputs import (
    HeartbeatConfig,
    OutputConfig,
    OutputWriter,
    build_output_writers,
    output_problems,
)
from tests.drivers.peers import ManualClock, free_port, mbap, scripted_tcp_peer, tcp_server

PLC = "plc"


def devices(port: int) -> list[ModbusTcpDeviceConfig]:
    return [ModbusTcpDeviceConfig(name=PLC, host="127.0.0.1", port=port, timeout_s=0.5,
                                  tags=(TagConfig(name="x", address=0),))]  # fmt: skip


def writer(port: int, clock: ManualClock, **kw: object) -> OutputWriter:
    cfg = OutputConfig(name="siren", device=PLC, address=3, **kw)  # type: ignore[arg-type]
    (w,) = build_output_writers([cfg], devices=devices(port), serial_ports={}, monotonic=clock)
    return w


async def coil(port: int, address: int) -> bool:
    client = AsyncModbusTcpClient("127.0.0.1", port=port)
    await client.connect()
    try:
        rr = await client.read_coils(address, count=1, device_id=1)
        return bool(rr.bits[0])
    finally:
        client.close()


async def register(port: int, address: int) -> int:
    client = AsyncModbusTcpClient("127.0.0.1", port=port)
    await client.connect()
    try:
        rr = await client.read_holding_registers(address, count=1, device_id=1)
        return int(rr.registers[0])
    finally:
        client.close()


@pytest.mark.integration
def test_a_coil_output_is_written_on_change_verified_and_re_asserted() -> None:
    async def main() -> list[object]:
        port, clock = free_port(), ManualClock()
        seen: list[object] = []
        async with tcp_server(port), writer(port, clock, reassert_s=5.0) as w:
            r = await w.apply(True)
            seen += [r is not None and r.ok, await coil(port, 3)]
            seen.append(await w.apply(True))  # unchanged, not due: nothing written
            clock.now = 5.0
            r = await w.apply(True)
            seen.append(r is not None and r.ok)  # re-asserted
            r = await w.apply(False)
            seen += [r is not None and r.ok and r.value, await coil(port, 3)]
        return seen

    assert asyncio.run(main()) == [True, True, None, True, 0, False]


@pytest.mark.integration
def test_de_energised_in_alarm_writes_on_in_normal_and_off_in_alarm() -> None:
    async def main() -> list[bool]:
        port, clock = free_port(), ManualClock()
        async with tcp_server(port), writer(port, clock, polarity="deenergise_in_alarm") as w:
            await w.apply(False)
            normal = await coil(port, 3)
            await w.apply(True)
            return [normal, await coil(port, 3)]

    assert asyncio.run(main()) == [True, False]


@pytest.mark.integration
def test_a_register_output_and_its_heartbeat_reach_the_holding_registers() -> None:
    async def main() -> list[int]:
        port, clock = free_port(), ManualClock()
        hb = HeartbeatConfig(address=40, period_s=1.0)
        async with tcp_server(port), writer(port, clock, table="holding", on_value=2,
                                            heartbeat=hb) as w:  # fmt: skip
            await w.apply(True)
            out = [await register(port, 3)]
            for t in (0.0, 0.5, 1.0, 2.0):
                clock.now = t
                await w.heartbeat()
            return [*out, await register(port, 40)]

    assert asyncio.run(main()) == [2, 3]  # beats at 0, 1, 2 s


@pytest.mark.integration
def test_a_device_that_does_not_keep_the_write_fails_verification() -> None:
    def reply(_n: int, tid: int, unit: int, pdu: bytes) -> list[bytes]:
        if pdu[0] == 5:
            return [mbap(tid, unit, pdu)]  # a correct echo...
        return [mbap(tid, unit, bytes([1, 1, 0]))]  # ...but the coil reads back off

    async def main() -> tuple[bool, str, object, object]:
        port, clock = free_port(), ManualClock()
        async with scripted_tcp_peer(port, reply), writer(port, clock) as w:
            r = await w.apply(True)
            assert r is not None
            soon = await w.apply(True)  # a failed write is not hammered...
            clock.now = 2.0
            again = await w.apply(True)  # ...but retried after RETRY_S
            return r.ok, r.reason, soon, again is not None and again.reason

    assert asyncio.run(main()) == (False, "verify_mismatch", None, "verify_mismatch")


def test_a_writer_refuses_any_address_it_was_not_configured_with() -> None:
    w = writer(free_port(), ManualClock())
    assert w.allowed == {("coil", 3)}
    with pytest.raises(DriverConfigError, match="not a configured output address"):
        asyncio.run(w._write("coil", 4, 1, alarm=True))  # the guard itself


def test_only_the_output_module_builds_write_requests() -> None:
    root = Path(__file__).resolve().parents[2]
    users = sorted(
        str(p.relative_to(root))
        for p in root.glob("[!.]*/**/*.py")
        if not {".venv", "tests", "build"} & set(p.parts)  # build/: a wheel built in the tree
        and ("write_coils" in p.read_text() or "write_registers" in p.read_text())
    )  # fmt: skip
    assert users == ["drivers/mbproto.py", "drivers/outputs.py"]


def test_outputs_that_cannot_work_are_reported_by_key() -> None:
    devs = [*devices(502), SerialLineDeviceConfig(name="gas", serial_port="p")]
    outs = [
        OutputConfig(name="a", device="nope", address=1),
        OutputConfig(name="b", device="gas", address=1),
        OutputConfig(name="c", device=PLC, address=1, on_value=5),
        OutputConfig(name="d", device=PLC, table="holding", address=1, on_value=0),
        OutputConfig(name="e", device=PLC, address=7),
        OutputConfig(name="e", device=PLC, address=7),
    ]
    keys = [k for k, _, _ in output_problems(outs, devs)]
    assert keys == [
        'outputs[0] "a".device',
        'outputs[1] "b".device',
        'outputs[2] "c".on_value',
        'outputs[3] "d".on_value',
        'outputs[5] "e".name',
        'outputs[5] "e".address',
    ]
    with pytest.raises(DriverConfigError, match="unknown device"):
        build_output_writers(outs[:1], devices=devs, serial_ports={})
