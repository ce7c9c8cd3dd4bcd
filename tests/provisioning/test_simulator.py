"""The tank farm simulator: the scenario, the agent config it writes, and a real poll of it."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import numpy as np
import pytest

from agent.config import AgentConfig
from drivers import ModbusDevice, Quality, build_device
from provisioning import cmd_simulate
from provisioning.simulator import (
    REGISTER_MAP,
    TankFarmSimulator,
    scenario_values,
    tank_farm_config,
)
from tests.drivers.peers import free_port

REPO = Path(__file__).resolve().parents[2]
STEP_S = 0.1


def gt102_series(seed: int, **kw: float) -> tuple[np.ndarray, np.ndarray]:
    t = np.arange(0.0, 120.0, STEP_S)
    return t, np.array([scenario_values(float(x), seed, **kw)["GT-102"] for x in t])


def first_time(t: np.ndarray, v: np.ndarray, level: float) -> float:
    above = np.nonzero(v >= level)[0]
    assert len(above), f"never reaches {level}"
    return float(t[above[0]])


def config_text(port: int = 5020, **kw: object) -> str:
    return tank_farm_config(
        modbus_host="127.0.0.1",
        modbus_port=port,
        mqtt_host="127.0.0.1",
        mqtt_port=1883,
        data_dir=".safeedge-data",
        **kw,  # type: ignore[arg-type]
    )


def test_scenario_is_deterministic_per_seed_and_differs_between_seeds() -> None:
    for t in (0.0, 3.3, 25.0, 99.9):
        assert scenario_values(t, 7) == scenario_values(t, 7)
    assert scenario_values(3.3, 7) != scenario_values(3.3, 8)
    assert set(scenario_values(0.0, 1)) == set(REGISTER_MAP)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_leak_on_gt102_crosses_25_then_50_then_recovers_to_baseline(seed: int) -> None:
    t, v = gt102_series(seed)
    assert v[t < 10.0].max() < 5.0
    assert v[t < 10.0].min() > 1.0
    assert 19.0 <= first_time(t, v, 25.0) <= 21.0
    assert 27.0 <= first_time(t, v, 50.0) <= 29.0
    assert 55.0 <= v.max() <= 65.0
    held = v[(t >= 32.0) & (t <= 42.0)]
    assert held.min() > 55.0  # holds ~10 s
    assert v[(t >= 60.0)].max() < 5.0  # recovered by t = 60 s
    after_peak = v[t >= 42.0]
    assert first_time(t[t >= 42.0], -after_peak, -25.0) < 60.0  # falls back below 25


def test_leak_repeats_every_cycle_and_follows_leak_start() -> None:
    assert scenario_values(140.0, 1)["GT-102"] == pytest.approx(
        scenario_values(20.0, 1)["GT-102"], abs=1.0
    )
    t, v = gt102_series(1, leak_start_s=30.0)
    assert 39.0 <= first_time(t, v, 25.0) <= 41.0


def test_other_detectors_stay_at_baseline_and_other_readings_are_plausible() -> None:
    for t in np.arange(0.0, 120.0, 0.5):
        v = scenario_values(float(t), 4)
        for gt in ("GT-101", "GT-103", "GT-104"):
            assert 0.0 < v[gt] < 5.0
        assert 15.0 < v["TT-101"] < 35.0
        assert 150.0 < v["PT-102"] < 210.0
        assert 20.0 < v["LT-101"] < 90.0


def test_a_leak_that_does_not_fit_in_the_cycle_is_refused() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        scenario_values(0.0, 1, leak_start_s=80.0)
    with pytest.raises(ValueError, match="does not fit"):
        TankFarmSimulator(leak_start_s=-1.0)


def test_generated_config_loads_as_agent_config_with_the_gas_rules() -> None:
    cfg = msgspec.toml.decode(config_text(site="S1", gateway="G9").encode(), type=AgentConfig)
    assert (cfg.gateway.site, cfg.gateway.id) == ("S1", "G9")
    (device,) = cfg.devices
    assert [t.name for t in device.tags] == list(REGISTER_MAP)
    assert (device.poll_interval_s, device.timeout_s) == (1.0, 0.5)
    gas = next(r for r in cfg.rules if r.match == "GT-*")
    assert (gas.high, gas.high_high, gas.deadband) == (25.0, 50.0, 2.0)
    assert {r.match for r in cfg.rules} >= {"GT-*", "TT-*", "PT-*"}
    off = msgspec.toml.decode(config_text(uplink_enabled=False).encode(), type=AgentConfig)
    assert not off.uplink.enabled


def test_generated_config_passes_the_agents_semantic_checks() -> None:
    from agent.config import loads_config  # finished by another engineer

    cfg = loads_config(config_text())
    assert cfg.devices[0].name == "tank-farm-plc"


def test_checked_in_example_is_the_generated_config() -> None:
    example = (REPO / "examples" / "tank-farm.toml").read_bytes()
    assert msgspec.toml.decode(example, type=AgentConfig) == msgspec.toml.decode(
        config_text().encode(), type=AgentConfig
    )


def device_for(port: int) -> ModbusDevice:
    cfg = msgspec.toml.decode(config_text(port).encode(), type=AgentConfig)
    (dev_cfg,) = cfg.devices
    index = {t.name: i for i, t in enumerate(dev_cfg.tags)}
    return build_device(dev_cfg, tag_index=index, serial_ports={})


@pytest.mark.integration
def test_device_from_the_generated_config_reads_the_simulated_leak() -> None:
    """Scenario time runs 40× faster: the leak (10 s → 60 s) passes in about 1.3 s."""
    names = list(REGISTER_MAP)
    gt102 = names.index("GT-102")

    async def main() -> tuple[list[tuple[float, float]], list[float]]:
        sim = TankFarmSimulator(port=free_port(), seed=3, time_scale=40.0)
        readings: list[tuple[float, float]] = []
        errors: list[float] = []
        async with sim, device_for(sim.port) as device:
            while sim.scenario_time() < 65.0:
                t0 = sim.scenario_time()
                batch = await device.poll()
                t1 = sim.scenario_time()
                assert device.online
                assert (batch.quality == Quality.GOOD).all(), batch.quality
                readings.append((t1, float(batch.value[gt102])))
                # every other point changes slowly: it must match the scenario closely
                expected = sim.values_at((t0 + t1) / 2)
                for i, name in enumerate(names):
                    if name != "GT-102":
                        errors.append(abs(float(batch.value[i]) - expected[name]))
                await asyncio.sleep(0.02)
        return readings, errors

    readings, errors = asyncio.run(main())
    values = [v for _, v in readings]
    peak = values.index(max(values))
    assert max(values) >= 55.0
    assert any(v >= 25.0 for v in values[:peak])
    assert min(values[:peak]) < 5.0
    assert values[-1] < 5.0  # recovered
    assert max(errors) < 1.0  # 0.1 quantisation, 20 Hz refresh at 40× speed, noise
    # the leak is seen at the right scenario time (within the refresh lag)
    t_25 = next(t for t, v in readings if v >= 25.0)
    assert 18.0 <= t_25 <= 23.0


@pytest.mark.integration
def test_simulator_refuses_a_port_in_use() -> None:
    async def main() -> None:
        async with TankFarmSimulator(port=free_port()) as first:
            with pytest.raises(OSError, match="cannot listen"):
                await TankFarmSimulator(port=first.port).start()

    asyncio.run(main())


def test_simulate_print_config_prints_the_config_for_the_given_ports() -> None:
    parser = argparse.ArgumentParser()
    cmd_simulate.register(parser.add_subparsers())
    args = parser.parse_args(
        ["simulate", "--port", "6021", "--mqtt-port", "1999", "--print-config"]
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert args.func(args) == 0
    cfg = msgspec.toml.decode(out.getvalue().encode(), type=AgentConfig)
    assert (cfg.devices[0].port, cfg.uplink.port) == (6021, 1999)  # type: ignore[union-attr]


_RUNNER = """
import argparse, sys
from provisioning import cmd_simulate
parser = argparse.ArgumentParser()
cmd_simulate.register(parser.add_subparsers())
args = parser.parse_args(sys.argv[1:])
sys.exit(args.func(args))
"""


@pytest.mark.integration
def test_simulate_serves_until_sigterm_and_announces_its_address() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", _RUNNER, "simulate", "--port", str(port), "--time-scale", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"127.0.0.1:{port}" in line
        assert "GT-102" in line

        async def poll() -> float:
            async with device_for(port) as device:
                batch = await device.poll()
                assert (batch.quality == Quality.GOOD).all()
                return float(batch.value[0])

        assert 0.0 < asyncio.run(poll()) < 5.0
        start = time.monotonic()
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - start < 5.0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.integration
def test_the_rtu_analyser_and_the_gas_controller_on_ptys_are_read_by_the_generated_config(
    tmp_path: Path,
) -> None:
    """All three drivers: the config generated with the pty paths builds devices that read
    the serial simulators' values (the TCP PLC is not started: its device is not polled)."""
    from agent.config import loads_config
    from provisioning.simulator_serial import (
        GasControllerSimulator,
        RtuAnalyserSimulator,
        serial_values,
    )

    async def main() -> dict[str, tuple[float, str]]:
        rtu = RtuAnalyserSimulator(seed=5, directory=tmp_path)
        gas = GasControllerSimulator(seed=5, push_period_s=0.1)
        out: dict[str, tuple[float, str]] = {}
        async with rtu, gas:
            cfg = loads_config(config_text(rtu_path=rtu.agent_path, gas_path=gas.agent_path))
            ports = {p.name: p for p in cfg.serial_ports}
            names = [t.name for d in cfg.devices for t in d.tags]
            index = {n: i for i, n in enumerate(names)}
            for dev_cfg in cfg.devices[1:]:
                device = build_device(dev_cfg, tag_index=index, serial_ports=ports)
                async with device:
                    await asyncio.sleep(0.3)  # the controller pushes every 0.1 s
                    batch = await device.poll()
                    assert device.online, device
                for t, v, q in zip(batch.tag, batch.value, batch.quality, strict=True):
                    out[names[int(t)]] = (float(v), Quality(int(q)).name)
        return out

    got = asyncio.run(main())
    assert sorted(got) == ["AT-201", "AT-202", "GT-301", "GT-302"]
    assert all(q == "GOOD" for _, q in got.values()), got
    band = [serial_values(t, 5) for t in np.arange(0.0, 60.0, 0.5)]
    for name, (value, _) in got.items():
        lo = min(b[name] for b in band)
        hi = max(b[name] for b in band)
        assert lo - 0.01 <= value <= hi + 0.01, (name, value)


@pytest.mark.integration
def test_simulate_with_rtu_and_gas_prints_the_pty_paths_and_writes_a_valid_config(
    tmp_path: Path,
) -> None:
    out_file = tmp_path / "site.toml"
    args = [sys.executable, "-m", "agent", "simulate", "--port", str(free_port()),
            "--rtu", "--gas", "--config-out", str(out_file)]  # fmt: skip
    with subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=REPO) as proc:
        try:
            assert proc.stdout is not None
            lines = [proc.stdout.readline() for _ in range(3)]
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    assert lines[0].startswith("rtu: ")
    assert lines[1].startswith("gas: /dev/pts/")
    text = out_file.read_text(encoding="utf-8")
    assert lines[0].split()[1] in text
    assert lines[1].split()[1] in text
    assert proc.returncode == 0
