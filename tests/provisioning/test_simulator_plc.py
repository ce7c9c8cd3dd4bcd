"""The simulated PLC's other faces: RTU over TCP, the output coils with their heartbeat
watchdog, and the scripted refusal that makes the gateway re-plan."""

from __future__ import annotations

import asyncio
import time
import tomllib

import msgspec
import pytest

from agent.config import AgentConfig
from drivers import (
    HeartbeatConfig,
    ModbusDevice,
    OutputConfig,
    Quality,
    build_device,
    build_output_writers,
)
from drivers.config import ModbusTcpDeviceConfig, TagConfig
from provisioning.simulator import (
    HEARTBEAT_ADDRESS,
    OUTPUT_COILS,
    REGISTER_MAP,
    TankFarmSimulator,
    tank_farm_config,
)
from tests.drivers.peers import free_port

pytestmark = pytest.mark.integration


def site_device(port: int, framing: str = "mbap") -> ModbusDevice:
    text = tank_farm_config(modbus_host="127.0.0.1", modbus_port=port, modbus_framing=framing,
                            mqtt_host="127.0.0.1", mqtt_port=1883, data_dir="/tmp/x")  # fmt: skip
    cfg = msgspec.convert(tomllib.loads(text), AgentConfig)
    dev = cfg.devices[0]
    device = build_device(dev, tag_index={t.name: i for i, t in enumerate(dev.tags)},
                          serial_ports={})  # fmt: skip
    assert isinstance(device, ModbusDevice)
    return device


def test_the_site_reads_the_same_over_rtu_over_tcp() -> None:
    async def main() -> tuple[list[int], str]:
        sim = TankFarmSimulator(port=free_port(), framing="rtu")
        async with sim, site_device(sim.port, "rtu") as device:
            batch = await device.poll()
            return [int(q) for q in batch.quality], device.bus

    qualities, bus = asyncio.run(main())
    assert qualities == [Quality.GOOD] * len(REGISTER_MAP)
    assert bus.startswith("rtu-tcp:")


def test_output_coils_follow_the_gateway_until_its_heartbeat_stops_then_fail_safe() -> None:
    plc = ModbusTcpDeviceConfig(name="plc", host="127.0.0.1", port=0, tags=(
        TagConfig(name="x", table="input", address=0),))  # fmt: skip

    async def main() -> list[object]:
        sim = TankFarmSimulator(port=free_port(), heartbeat_timeout_s=0.5)
        seen: list[object] = []
        async with sim:
            cfg = msgspec.structs.replace(plc, port=sim.port)
            siren = OutputConfig(name="siren", device="plc", address=OUTPUT_COILS["siren"],
                                 polarity="deenergise_in_alarm",
                                 heartbeat=HeartbeatConfig(address=HEARTBEAT_ADDRESS,
                                                           period_s=0.1))  # fmt: skip
            (w,) = build_output_writers([siren], devices=[cfg], serial_ports={})
            async with w:
                for _ in range(5):
                    await w.heartbeat()
                    await w.apply(False)  # normal: energised (fail-safe wiring)
                    await asyncio.sleep(0.1)
                seen += [sim.coils[1], sim.failsafe]
            start = time.monotonic()  # the gateway is gone: no more heartbeats
            for _ in range(60):  # up to 3 s
                if sim.failsafe:
                    break
                await asyncio.sleep(0.05)
            seen += [sim.failsafe, sim.coils[1], round(time.monotonic() - start, 1) <= 1.0]
        return seen

    assert asyncio.run(main()) == [True, False, True, False, True]


def test_the_scripted_refusal_is_isolated_and_forgotten_by_the_gateway() -> None:
    async def main() -> list[tuple[int, bool]]:
        sim = TankFarmSimulator(port=free_port(), time_scale=10.0, refusal_at_s=5.0,
                                refusal_s=10.0)  # fmt: skip
        out = []
        async with sim, site_device(sim.port) as device:
            while sim.scenario_time() < 25.0:
                batch = await device.poll()
                out.append((len(device.requests), bool((batch.quality == Quality.GOOD).all())))
                await asyncio.sleep(0.1)
        return out

    out = asyncio.run(main())
    assert out[0] == (2, True)
    assert any(n > 2 and not good for n, good in out)  # isolated while refused
    assert out[-3:] == [(2, True)] * 3  # merged back once it reads fine


def test_restarting_the_scenario_puts_its_clock_back_at_zero() -> None:
    """The demo restarts the script when the agent polls: the leak is not missed."""

    async def main() -> tuple[float, float]:
        sim = TankFarmSimulator(port=free_port(), time_scale=100.0)
        async with sim:
            await asyncio.sleep(0.2)
            before = sim.scenario_time()
            sim.restart_scenario()
            return before, sim.scenario_time()

    before, after = asyncio.run(main())
    assert before >= 20.0 and 0.0 <= after < 5.0
