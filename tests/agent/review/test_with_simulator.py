"""``safeedge review`` on a history made by running the agent against the simulator (a real
Modbus TCP server): the leak scenario's alarms give the KPIs the naive twin computes from the
same records; tune on the agent's own telemetry equals ``rules replay`` on its export; and the
incident recorder in the runtime keeps every pre-trigger poll while report-by-exception thins
the telemetry to almost nothing."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path

import pytest

from agent.cli import main
from agent.config import loads_config, resolved_paths
from agent.pipeline import Pipeline
from agent.review.history import History
from agent.review.incident import incidents_from
from agent.review.kpi import alarm_kpis
from agent.tags import TagTable
from buffer import StoreReader, Stream
from provisioning.localbroker import free_port
from provisioning.simulator import TankFarmSimulator, tank_farm_config
from tests.agent.review.naive import naive_kpis

pytestmark = pytest.mark.integration


def _run_leak(tmp_path: Path, extra: str = "") -> Path:
    port = free_port()
    text = tank_farm_config(
        modbus_host="127.0.0.1",
        modbus_port=port,
        mqtt_host="127.0.0.1",
        mqtt_port=free_port(),
        data_dir=str(tmp_path / "data"),
        uplink_enabled=False,
        governance=False,  # every reading raw; the tests add their own report-by-exception
    )
    text = text.replace(
        "poll_interval_s = 1.0\ntimeout_s = 0.5", "poll_interval_s = 0.2\ntimeout_s = 0.15"
    )
    config = tmp_path / "agent.toml"
    config.write_text(text + extra)
    cfg = loads_config(config.read_text(), source=str(config))
    paths = resolved_paths(cfg, config)

    async def scenario() -> None:
        async with TankFarmSimulator(port=port, time_scale=5.0, leak_start_s=5.0, seed=3):
            pipeline = Pipeline(cfg, paths, flush_timeout_s=0.5)
            stop = asyncio.Event()
            task = asyncio.create_task(pipeline.run(stop))
            try:
                await asyncio.wait_for(pipeline.ready.wait(), 60)
                await asyncio.sleep(12.0)  # leak: level 1 at ~3 s, level 2 at ~4.6 s, clear ~11 s
            finally:
                stop.set()
                await asyncio.wait_for(task, 30)

    asyncio.run(scenario())
    return config


@pytest.fixture(scope="module")
def leak_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _run_leak(tmp_path_factory.mktemp("leak"))


def test_kpis_of_the_agents_own_history_agree_with_the_twin(leak_site: Path) -> None:
    cfg = loads_config(leak_site.read_text(), source=str(leak_site))
    paths = resolved_paths(cfg, leak_site)
    with StoreReader.open(
        path=paths.buffer_path, key_file=paths.buffer_key_file, gateway_id="GW1"
    ) as r:
        decoded = [json.loads(rec.payload or b"") for rec in r.records(stream=Stream.ALARM)]
    assert ("GT-102", "high", "escalate") in {(d["tag"], d["alarm"], d["event"]) for d in decoded}
    start = min(d["ts_ms"] for d in decoded) - 1000
    end = max(d["ts_ms"] for d in decoded) + 1000
    device_of = {t.name: t.device for t in TagTable(cfg)}
    with History.for_config(cfg, leak_site) as h:
        k = alarm_kpis(
            h.alarms(to_ms=end),
            from_ms=start,
            to_ms=end,
            fleeting_ms=10_000,
            device_of=device_of,
            events=h.events(from_ms=start, to_ms=end),
        )
        events = h.events(from_ms=start, to_ms=end)
    want = naive_kpis(
        decoded, from_ms=start, to_ms=end, fleeting_ms=10_000, device_of=device_of, events=events
    )
    assert k.alarms == want["alarms"] >= 1
    for f in (
        "peak",
        "chattering",
        "fleeting",
        "stale",
        "standing",
        "standing_list",
        "acked",
        "cleared",
        "counts_10min",
        "faults_by_device",
    ):
        assert getattr(k, f) == want[f], f
    assert dict(k.priority) == want["priority"] and 2 in k.priority
    assert dict(k.clear_ms) == want["clear_ms"]


def test_tune_on_the_agents_telemetry_equals_rules_replay(
    leak_site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "tune"
    code = main(
        [
            "review",
            "tune",
            "--config",
            str(leak_site),
            "--tag",
            "GT-102",
            "--from",
            "2020-01-01",
            "--param",
            "deadband=0,5",
            "--param",
            "on_delay_s=0,1",
            "--json",
            "--export",
            str(out_dir),
        ]
    )
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["samples"] > 40 and doc["crossings"]["high_high"] == 1
    for n, cand in enumerate(doc["candidates"]):
        assert (
            main(
                [
                    "rules",
                    "replay",
                    "--rules",
                    str(out_dir / f"rules-{n}.toml"),
                    "--trace",
                    str(out_dir / "trace.csv"),
                ]
            )
            == 0
        )
        assert [json.loads(x) for x in capsys.readouterr().out.splitlines()] == cand["events"]
    assert doc["candidates"][0]["events"][0]["event"] == "raise"


RBE_AND_RECORDER = """
[uplink.report_by_exception]
deadband = 1000.0
integrity_s = 3600.0

[review.recorder]
tags = ["GT-102"]
pre_s = 3.0
post_s = 1.0
"""


def test_an_incident_window_holds_every_pre_trigger_poll_with_report_by_exception_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _run_leak(tmp_path, RBE_AND_RECORDER)
    cfg = loads_config(config.read_text(), source=str(config))
    with History.for_config(cfg, config) as h:
        telemetry = h.points(tags=["GT-102"]).of("GT-102")[0]
        (inc,) = incidents_from(h.incident_records())
    assert len(telemetry) <= 3  # report-by-exception: the first reading, quality changes
    assert inc.trigger["tag"] == "GT-102" and inc.trigger["level"] == 2
    assert inc.tags == [t.name for t in TagTable(cfg) if t.device == "tank-farm-plc"]
    pre = sorted(p.ts for p in inc.points if p.tag == "GT-102" and p.ts < inc.opened_ms)
    assert len(pre) >= 10  # 3 s of 0.2 s polls (some may be late on a loaded machine)
    assert pre[0] >= inc.opened_ms - 3000
    assert max(b - a for a, b in itertools.pairwise(pre)) < 1000  # no poll missing
    values = [p.value for p in inc.points if p.tag == "GT-102" and p.ts < inc.opened_ms]
    assert len(set(values)) > 5  # the ramp at full resolution, not one reported value
    code = main(
        ["review", "incident", inc.id, "--config", str(config), "--json", str(tmp_path / "i.json")]
    )
    assert code == 0
    report = json.loads((tmp_path / "i.json").read_text())
    gt102 = next(t for t in report["tags"] if t["tag"] == "GT-102")
    assert gt102["pre_trigger_samples"] == len(pre)
    assert ("GT-102", "high", "escalate") in {
        (e["tag"], e["alarm"], e["event"]) for e in report["timeline"]
    }
