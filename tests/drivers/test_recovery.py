"""Recovery of lost devices (probe schedule, reasons, outage durations) and shared TCP
gateways where one silent unit must not disturb the others. Time is an injected clock."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import serial

from drivers import ModbusDevice, Quality, build_device
from drivers.config import (
    ModbusRtuDeviceConfig,
    ModbusTcpDeviceConfig,
    SerialLineDeviceConfig,
    SerialLineTagConfig,
    SerialPortConfig,
    TagConfig,
)
from drivers.recovery import Recovery
from tests.drivers.peers import (
    ManualClock,
    free_port,
    gateway_proxy,
    pty_pair,
    silent_peer,
    sim_device,
    tcp_server,
)

TIMEOUT_S = 0.2


def tcp(port: int, clock: ManualClock, *, unit_id: int = 1, name: str = "plc",
        **kw: object) -> ModbusDevice:  # fmt: skip
    cfg = ModbusTcpDeviceConfig(
        name=name, host="127.0.0.1", port=port, unit_id=unit_id, timeout_s=TIMEOUT_S,
        tags=(TagConfig(name=f"{name}.a", address=0),), **kw,  # type: ignore[arg-type]
    )  # fmt: skip
    device = build_device(cfg, tag_index={f"{name}.a": unit_id}, serial_ports={},
                          monotonic=clock, clock_ms=lambda: int(clock.now * 1000))  # fmt: skip
    assert isinstance(device, ModbusDevice)
    return device


def test_a_lost_device_is_probed_at_a_fixed_interval_not_a_growing_back_off() -> None:
    r = Recovery(poll_interval_s=1.0, probe_interval_s=2.0, backoff_max_s=10.0, shared_line=False)
    allowed = []
    for t in range(20):
        if r.allow(float(t)):
            allowed.append(t)
            r.failed(float(t), "timeout")
    assert allowed == list(range(0, 20, 2))
    assert r.succeeded(20.0) == 20.0
    assert r.allow(20.5) and r.succeeded(21.0) is None


def test_only_reopening_a_channel_backs_off_and_a_shared_line_probes_once_per_period() -> None:
    r = Recovery(poll_interval_s=1.0, probe_interval_s=2.0, backoff_max_s=10.0, shared_line=False)
    allowed = []
    for t in range(40):
        if r.allow(float(t)):
            allowed.append(t)
            r.failed(float(t), "refused")
    assert allowed == [0, 2, 6, 14, 24, 34]  # 2, 4, 8, then capped at 10
    serial = Recovery(poll_interval_s=5.0, probe_interval_s=2.0, backoff_max_s=10.0,
                      shared_line=True)  # fmt: skip
    assert serial.probe_interval_s == 5.0  # never more often than the unit's own period


def test_a_silent_device_costs_one_timeout_per_probe_and_nothing_in_between() -> None:
    async def main() -> tuple[list[bool], list[str], dict[str, object]]:
        port, clock = free_port(), ManualClock()
        slow: list[bool] = []
        seen: list[str] = []
        async with silent_peer(port), tcp(port, clock) as device:
            for t in range(6):
                clock.now = float(t)
                start = time.monotonic()
                batch = await device.poll()
                slow.append(time.monotonic() - start > TIMEOUT_S * 0.8)
                seen.append(Quality(int(batch.quality[0])).name)
                assert not device.online
            health = device.health()
        return slow, seen, health

    slow, seen, health = asyncio.run(main())
    assert slow == [True, False, True, False, True, False]  # probes at 0, 2, 4 s
    assert seen == ["BAD_COMM"] * 6
    assert health["reason"] == "timeout" and "no answer" in str(health["error"])


def test_a_device_answering_again_reads_good_within_probe_interval_plus_one_period() -> None:
    """Period 1 s, probe 2 s: bound max(2 x 1, 2 + 1) = 3 s from the device answering again."""

    async def main() -> tuple[float, dict[str, object], list[str]]:
        port, clock = free_port(), ManualClock()
        reasons = []
        async with tcp(port, clock) as device:
            t = 0.0
            async with silent_peer(port):
                while t < 33.0:  # a 33 s outage, polled every second
                    clock.now = t
                    await device.poll()
                    reasons.append(device.lost_reason)
                    t += 1.0
            back_at = t - 0.5  # the device answers again half a period before the next poll
            async with tcp_server(port):
                while True:
                    clock.now = t
                    batch = await device.poll()
                    if batch.quality[0] == Quality.GOOD:
                        return t - back_at, device.health(), reasons
                    t += 1.0

    delay, health, reasons = asyncio.run(main())
    assert delay <= 3.0
    assert health["online"] and health["reason"] == ""
    assert 33_000 <= int(health["last_outage_ms"]) <= 36_000  # type: ignore[call-overload]
    assert set(reasons) == {"timeout"}


def test_a_refused_connection_and_a_missing_host_are_named() -> None:
    async def main() -> tuple[str, str]:
        clock = ManualClock()
        async with tcp(free_port(), clock) as refused:
            await refused.poll()
        cfg = ModbusTcpDeviceConfig(name="x", host="no-such-host.invalid", timeout_s=1.0,
                                    tags=(TagConfig(name="x.a", address=0),))  # fmt: skip
        missing = build_device(cfg, tag_index={"x.a": 0}, serial_ports={}, monotonic=clock)
        assert isinstance(missing, ModbusDevice)
        async with missing:
            await missing.poll()
        return refused.lost_reason, missing.lost_reason

    assert asyncio.run(main()) == ("refused", "no_route")


@pytest.mark.integration
def test_one_silent_unit_behind_a_gateway_does_not_reconnect_or_slow_the_others() -> None:
    async def main() -> tuple[list[str], list[str], int, int]:
        upstream, port, clock = free_port(), free_port(), ManualClock()
        good: list[str] = []
        lost: list[str] = []
        async with (
            tcp_server(upstream, sim_device(1), sim_device(2)),
            gateway_proxy(port, upstream, silent={2}) as accepted,
            tcp(port, clock, unit_id=1, name="u1") as u1,
            tcp(port, clock, unit_id=2, name="u2") as u2,
        ):
            for t in range(16):  # 8 s of silence of unit 2, polled every 0.5 s
                clock.now = t * 0.5
                for device, out in ((u1, good), (u2, lost)):
                    start = time.monotonic()
                    batch = await device.poll()
                    out.append(Quality(int(batch.quality[0])).name)
                    if device is u1:
                        assert time.monotonic() - start < TIMEOUT_S / 2
            return good, lost, accepted[0], u1.link.connects

    good, lost, accepted, connects = asyncio.run(main())
    assert good == ["GOOD"] * 16
    assert lost == ["BAD_COMM"] * 16
    assert accepted == 1 and connects == 1  # 0 reconnects


def test_a_missing_or_busy_serial_port_is_named_for_modbus_and_serial_line_devices(
    tmp_path: Path,
) -> None:
    async def main(busy_path: str) -> list[str]:
        reasons = []
        for path in (str(tmp_path / "no-such-tty"), busy_path):
            port = SerialPortConfig(name="p", path=path, baudrate=115200)
            rtu = ModbusRtuDeviceConfig(name="r", serial_port="p", timeout_s=0.2,
                                        tags=(TagConfig(name="r.a", address=0),))  # fmt: skip
            g_a = SerialLineTagConfig(name="g.a", field=0)
            line = SerialLineDeviceConfig(name="g", serial_port="p", poll_request="?\r\n",
                                          tags=(g_a,))  # fmt: skip
            for cfg in (rtu, line):
                device = build_device(cfg, tag_index={"r.a": 0, "g.a": 1},
                                      serial_ports={"p": port})  # fmt: skip
                async with device:
                    await device.poll()
                    reasons.append(device.lost_reason)
        return reasons

    with pty_pair(tmp_path) as (a, _b):
        holder = serial.Serial(a, exclusive=True)  # another program owns the line
        try:
            reasons = asyncio.run(main(a))
        finally:
            holder.close()
    assert reasons == ["port_missing", "port_missing", "port_busy", "port_busy"]
