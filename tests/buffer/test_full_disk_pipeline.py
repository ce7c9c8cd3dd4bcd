"""The running pipeline on a disk "full" for telemetry: every telemetry append is refused and
counted, alarms and events still go into the buffer, and polling goes on.

The disk is made full for telemetry by a reserve larger than any disk (``reserve_mb``), which
exercises the same refusal path as a nearly full disk without needing to mount one."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from agent.config import loads_config, resolved_paths
from agent.pipeline import Pipeline
from buffer import Store
from buffer.record import Stream
from provisioning.localbroker import free_port
from provisioning.simulator import TankFarmSimulator, tank_farm_config

pytestmark = pytest.mark.integration


def test_a_full_disk_refuses_telemetry_counted_while_alarms_get_in_and_polling_goes_on(
    tmp_path: Path,
) -> None:
    modbus_port = free_port()
    config_path = tmp_path / "agent.toml"
    text = tank_farm_config(
        modbus_host="127.0.0.1",
        modbus_port=modbus_port,
        mqtt_host="127.0.0.1",
        mqtt_port=free_port(),  # nothing listens: records stay in the buffer
        data_dir=str(tmp_path / "data"),
    )
    text = text.replace('key_file = "buffer.key"\n', 'key_file = "buffer.key"\nreserve_mb = 1e12\n')
    config_path.write_text(text)
    cfg = loads_config(config_path.read_text(), source=str(config_path))
    assert cfg.buffer.reserve_mb == 1e12
    paths = resolved_paths(cfg, config_path)
    polls_when_alarmed = 0

    async def scenario() -> None:
        nonlocal polls_when_alarmed
        pipeline = Pipeline(cfg, paths, flush_timeout_s=0.5)
        stop = asyncio.Event()
        task = asyncio.create_task(pipeline.run(stop))
        try:
            await asyncio.wait_for(pipeline.ready.wait(), 60)
            sim = TankFarmSimulator(port=modbus_port, time_scale=5.0, leak_start_s=10.0, seed=3)
            async with sim:
                for _ in range(300):
                    assert pipeline.store is not None
                    if pipeline.store.stats().streams[Stream.ALARM].last_seq:
                        break
                    await asyncio.sleep(0.1)
                polls_when_alarmed = pipeline.stats.polls
                await asyncio.sleep(1.5)  # the agent keeps polling after the refusals
                assert pipeline.stats.polls > polls_when_alarmed
                assert pipeline.stats.append_failures >= pipeline.stats.polls - 1
                assert not task.done()
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)

    asyncio.run(scenario())

    with Store.open(path=paths.buffer_path, key_file=paths.buffer_key_file, gateway_id="GW1") as s:
        stats = s.stats().streams
        events = [json.loads(r.payload)["kind"] for r in s.resend(Stream.EVENT, 1, 100)]
    assert polls_when_alarmed > 0
    assert stats[Stream.TELEMETRY].last_seq == 0
    assert stats[Stream.ALARM].undelivered >= 1
    assert "started" in events
