"""The pipeline in-process against the simulator (a real Modbus TCP server): alarms are raised
and kept locally while no broker is reachable."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.config import AgentConfig, ResolvedPaths, loads_config, resolved_paths
from agent.pipeline import Pipeline
from buffer import Store
from buffer.record import Stream
from provisioning.localbroker import free_port
from provisioning.simulator import TankFarmSimulator, tank_farm_config
from tests.support.telemetry import points_of

pytestmark = pytest.mark.integration


def _gt102_high(store: Store) -> list[tuple[str, int]]:
    last = store.stats().streams[Stream.ALARM].last_seq
    bodies = [json.loads(r.payload) for r in store.resend(Stream.ALARM, 1, last)] if last else []
    return [
        (b["event"], b["level"]) for b in bodies if (b["tag"], b["alarm"]) == ("GT-102", "high")
    ]


def test_alarms_are_raised_and_buffered_while_the_broker_is_unreachable(tmp_path: Path) -> None:
    modbus_port, dead_mqtt_port = free_port(), free_port()
    config_path = tmp_path / "agent.toml"
    config_path.write_text(
        tank_farm_config(
            modbus_host="127.0.0.1",
            modbus_port=modbus_port,
            mqtt_host="127.0.0.1",
            mqtt_port=dead_mqtt_port,  # nothing listens here: the uplink stays down
            data_dir=str(tmp_path / "data"),
        )
    )
    cfg = loads_config(config_path.read_text(), source=str(config_path))
    paths = resolved_paths(cfg, config_path)

    async def scenario() -> None:
        pipeline = Pipeline(cfg, paths, flush_timeout_s=0.5)
        stop = asyncio.Event()
        task = asyncio.create_task(pipeline.run(stop))
        try:
            await asyncio.wait_for(pipeline.ready.wait(), 60)
            # The PLC comes up after the agent; its leak starts 2 s (scenario 10 s) later.
            sim = TankFarmSimulator(port=modbus_port, time_scale=5.0, leak_start_s=10.0, seed=3)
            async with sim:
                for _ in range(300):  # the store is read on the loop thread, as the agent does
                    assert pipeline.store is not None
                    if ("escalate", 2) in _gt102_high(pipeline.store):
                        break
                    await asyncio.sleep(0.1)
            assert pipeline.uplink is not None
            assert not pipeline.uplink.connected
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)

    asyncio.run(scenario())

    with Store.open(path=paths.buffer_path, key_file=paths.buffer_key_file, gateway_id="GW1") as s:
        stats = s.stats()
        gt102 = _gt102_high(s)
        telemetry = stats.streams[Stream.TELEMETRY]
        events = [
            json.loads(r.payload)
            for r in s.resend(Stream.EVENT, 1, stats.streams[Stream.EVENT].last_seq)
        ]
    # the PLC was down when the agent started, then came up: reported once each way
    changes = [(e["kind"], e.get("device")) for e in events if e["kind"].startswith("device_")]
    assert changes == [("device_lost", "tank-farm-plc"), ("device_restored", "tank-farm-plc")]
    assert stats.streams[Stream.ALARM].delivered == 0
    assert gt102[:2] == [("raise", 1), ("escalate", 2)]
    assert telemetry.undelivered >= 2
    assert telemetry.delivered == 0


def _offline_config(tmp_path: Path, modbus_port: int, edit: Callable[[str], str]) -> AgentConfig:
    """The tank-farm config without an uplink, changed by ``edit``, written under tmp_path."""
    text = edit(
        tank_farm_config(
            modbus_host="127.0.0.1",
            modbus_port=modbus_port,
            mqtt_host="127.0.0.1",
            mqtt_port=free_port(),
            data_dir=str(tmp_path / "data"),
            uplink_enabled=False,
            governance=False,  # these tests count every reading of every tag
        )
    )
    config_path = tmp_path / "agent.toml"
    config_path.write_text(text)
    return loads_config(text, source=str(config_path))


def _run_with_simulator(cfg: AgentConfig, paths: ResolvedPaths, port: int, seconds: float) -> int:
    """Run the pipeline against the simulator for ``seconds`` after ready; returns polls."""

    async def scenario() -> int:
        async with TankFarmSimulator(port=port, seed=5):
            pipeline = Pipeline(cfg, paths, flush_timeout_s=0.5)
            stop = asyncio.Event()
            task = asyncio.create_task(pipeline.run(stop))
            try:
                await asyncio.wait_for(pipeline.ready.wait(), 60)
                await asyncio.sleep(seconds)
            finally:
                stop.set()
                await asyncio.wait_for(task, 30)
            return pipeline.stats.polls

    return asyncio.run(scenario())


def _telemetry_counts(paths: ResolvedPaths) -> dict[str, int]:
    """How many readings of each tag the buffer holds."""
    counts: dict[str, int] = {}
    with Store.open(path=paths.buffer_path, key_file=paths.buffer_key_file, gateway_id="GW1") as s:
        last = s.stats().streams[Stream.TELEMETRY].last_seq
        for record in s.resend(Stream.TELEMETRY, 1, last):
            for point in points_of(json.loads(record.payload)):
                counts[point[0]] = counts.get(point[0], 0) + 1
    return counts


def test_poll_groups_are_polled_at_their_own_periods_on_one_connection(tmp_path: Path) -> None:
    modbus_port = free_port()

    def edit(text: str) -> str:
        # gas detectors every 0.2 s, everything else at the device's 1 s
        text = text.replace(
            "timeout_s = 0.5\n",
            'timeout_s = 0.5\npoll_groups = [{ name = "gas", poll_interval_s = 0.2 }]\n',
            1,
        )
        for n in range(101, 105):
            text = text.replace(f'name = "GT-{n}"\n', f'name = "GT-{n}"\npoll_group = "gas"\n')
        return text

    cfg = _offline_config(tmp_path, modbus_port, edit)
    paths = resolved_paths(cfg, tmp_path / "agent.toml")
    _run_with_simulator(cfg, paths, modbus_port, 3.0)
    counts = _telemetry_counts(paths)
    assert counts["TT-101"] >= 2
    assert counts["GT-101"] >= 3 * counts["TT-101"], counts
    assert counts["GT-104"] == counts["GT-101"]


def test_report_by_exception_sends_a_flat_tag_once_and_a_moving_tag_every_poll(
    tmp_path: Path,
) -> None:
    modbus_port = free_port()

    def edit(text: str) -> str:
        text = text.replace(
            "poll_interval_s = 1.0\ntimeout_s = 0.5", "poll_interval_s = 0.2\ntimeout_s = 0.15"
        )
        # a deadband no reading moves past, an hour of integrity period; PT-101 reports changes
        return text.replace(
            "[buffer]",
            "[uplink.report_by_exception]\ndeadband = 1000.0\nintegrity_s = 3600.0\n"
            'deadbands = { "PT-101" = 0.0 }\n\n[buffer]',
            1,
        )

    cfg = _offline_config(tmp_path, modbus_port, edit)
    paths = resolved_paths(cfg, tmp_path / "agent.toml")
    polls = _run_with_simulator(cfg, paths, modbus_port, 2.0)
    counts = _telemetry_counts(paths)
    assert polls >= 5
    assert counts["GT-101"] == 1  # its first good reading, then nothing new to report
    assert counts["TT-102"] == 1
    assert counts["PT-101"] >= polls - 2  # noisy pressure: every reading moved
