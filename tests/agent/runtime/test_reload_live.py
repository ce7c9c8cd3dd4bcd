"""Reload in place of what the telemetry shaper, the per-tag data policies and the alarm
outputs are built from, against real peers: a real agent process polls the tank-farm PLC
simulator (pymodbus server) and a gas controller on a pty, publishes to a real Mosquitto read
by a plain subscriber, and writes the PLC's coils (read back with pymodbus' own client).

After each SIGHUP the new setting must show on the wire or on the coil, ``config_applied`` must
say what changed, the alarm of an unchanged tag must go on (no second raise), and devices the
edit did not touch must keep their connection (no bus of theirs rebuilt, no device_lost).
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.codec import decode_envelope
from buffer.record import Stream
from provisioning.localbroker import free_port
from provisioning.simulator import DEVICE_NAME, OUTPUT_COILS, tank_farm_config
from tests.support.agentproc import AgentProc, GasLine, records
from tests.support.mosquitto import Broker, Received, Subscriber
from tests.support.plc import PlcThread, coils
from tests.support.telemetry import points_of

pytestmark = pytest.mark.integration

ROOT = "safeedge/v1/S1/GW1"
SIREN = OUTPUT_COILS["siren"]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "broker")
    b.start()
    yield b
    b.kill()


def _config(
    base: str, *, siren_level: int, tags: str = "", plc_timeout: str = "timeout_s = 0.5"
) -> str:
    """The tank farm + gas controller, a siren on the PLC for GT-301 alarms of
    ``siren_level`` and above, and ``tags`` (``[[uplink.tags]]`` tables)."""
    text = base.replace("timeout_s = 0.5", plc_timeout, 1)  # the PLC comes first
    return f"""{text}
[[outputs]]
name = "siren"
device = "{DEVICE_NAME}"
table = "coil"
address = {SIREN}
reassert_s = 5.0
  [outputs.when]
  tags = ["GT-301"]
  min_level = {siren_level}
{tags}"""


STATS_TT = """
[[uplink.tags]]
match = "TT-*"
policy = "stats"
window_s = 1.0

[[uplink.tags]]
tags = ["GT-301"]
precision = 0

[[uplink.tags]]
match = "PT-*"
class = "confidential"
"""


def _telemetry(messages: list[Received]) -> tuple[list[list[Any]], list[list[Any]]]:
    """(raw points, statistics rows) of the telemetry messages, in order."""
    points: list[list[Any]] = []
    stats: list[list[Any]] = []
    for m in messages:
        if not m.topic.endswith("/telemetry"):
            continue
        body = json.loads(bytes(decode_envelope(m.payload).body))
        if "stats" in body:
            stats += body["stats"]
        else:
            points += points_of(body)
    return points, stats


def _events(messages: list[Received], kind: str) -> list[dict[str, Any]]:
    out = []
    for m in messages:
        if m.topic.endswith("/event"):
            body = json.loads(bytes(decode_envelope(m.payload).body))
            if body["kind"] == kind:
                out.append(body)
    return out


def _meta_tag(messages: list[Received], tag: str) -> dict[str, Any]:
    """The tag's entry in the last ``meta`` received (retained JSON, no envelope)."""
    metas = [m for m in messages if m.topic.endswith("/meta") and m.payload]
    if not metas:
        return {}
    doc = json.loads(metas[-1].payload)
    return next((t for t in doc["tags"] if t["name"] == tag), {})


def until(what: str, check: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout_s} s")
        time.sleep(0.1)


def test_reload_applies_policy_precision_stats_and_outputs_in_place(
    tmp_path: Path, broker: Broker
) -> None:
    plc = PlcThread(free_port(), leak_start_s=1e6, cycle_s=1e7, heartbeat_timeout_s=0.0)
    line = GasLine()
    line.value = 30.4  # GT-301 above high (25): a level-1 alarm, below the siren's level 2
    data = tmp_path / "data"
    base = tank_farm_config(modbus_host="127.0.0.1", modbus_port=plc.sim.port,
                            mqtt_host=broker.host, mqtt_port=broker.port, data_dir=str(data),
                            site="S1", gateway="GW1", gas_path=line.path,
                            governance=False)  # fmt: skip
    config = tmp_path / "agent.toml"
    config.write_text(_config(base, siren_level=2))
    agent = AgentProc(config)
    try:
        with Subscriber(broker, f"{ROOT}/#") as sub:
            agent.wait_log("event=raise")
            until(
                "raw TT-101 and GT-301 at 30.4 on the wire",
                lambda: {("TT-101", None), ("GT-301", 30.4)}
                <= {
                    (p[0], None if p[0] == "TT-101" else p[2]) for p in _telemetry(sub.messages)[0]
                },
            )
            time.sleep(1.5)  # the output task has seen the level-1 alarm
            assert coils(plc.sim.port)[SIREN] is False  # level 1: not the siren's business

            # 1. data policy (TT-* to 1 s statistics), class (PT-* confidential: statistics by
            # class), precision (GT-301 to 0 decimals) and the siren's level (1): SIGHUP, all
            # at once, no device touched
            config.write_text(_config(base, siren_level=1, tags=STATS_TT))
            agent.signal(signal.SIGHUP)
            agent.wait_log("config_applied")
            until("the siren sounds for the level-1 alarm", lambda: coils(plc.sim.port)[SIREN],
                  5)  # fmt: skip
            mark = len(sub.messages)
            until(
                "TT-101 as statistics",
                lambda: any(r[0] == "TT-101" for r in _telemetry(sub.messages[mark:])[1]),
            )
            until(
                "GT-301 rounded",
                lambda: any(p[0] == "GT-301" for p in _telemetry(sub.messages[mark + 5 :])[0]),
            )
            later = sub.messages[mark + 5 :]  # past what the old shaper still held
            raw, stats = _telemetry(later)
            assert not [p for p in raw if p[0][:3] in ("TT-", "PT-")], "TT-*/PT-* still raw"
            assert {p[2] for p in raw if p[0] == "GT-301"} == {30.0}
            row = next(r for r in stats if r[0] == "TT-101")
            assert row[2] >= 1  # samples in the 1 s window
            applied = _events(sub.messages, "config_applied")
            assert len(applied) == 1, applied
            a = applied[0]
            assert a["mode"] == "in_place" and a["changed"] == ["outputs", "uplink.tags"]
            assert "outputs.siren: changed" in a["changes"]
            assert "TT-101: policy raw -> stats, window_s 60.0 -> 1.0" in a["changes"]
            assert "GT-301: precision None -> 0" in a["changes"]
            assert "PT-101: class internal -> confidential, policy raw -> stats" in a["changes"]
            until("meta with the new policies", lambda: _meta_tag(sub.messages, "TT-101").get(
                "policy") == "stats")  # fmt: skip
            assert _meta_tag(sub.messages, "TT-101")["window_ms"] == 1000
            assert _meta_tag(sub.messages, "GT-301")["precision"] == 0
            assert _meta_tag(sub.messages, "GT-302")["policy"] == "raw"  # unchanged, still told
            pt = _meta_tag(sub.messages, "PT-101")  # confidential: [uplink.policy]'s stats
            assert (pt["class"], pt["policy"], pt["window_ms"]) == ("confidential", "stats", 60000)
            log1 = agent.wait_log("reload_outputs")
            assert "reload_buses" not in log1  # no device was touched by this edit

            # 2. the PLC's device settings: its bus and the siren's writer are rebuilt, the
            # gas controller's line keeps polling, the siren stays on (the alarm goes on)
            config.write_text(
                _config(base, siren_level=1, tags=STATS_TT, plc_timeout="timeout_s = 0.6")
            )
            agent.signal(signal.SIGHUP)
            log2 = agent.wait_log("reload_outputs", count=2)
            until("two config_applied", lambda: len(_events(sub.messages, "config_applied")) == 2)
            b = _events(sub.messages, "config_applied")[1]
            assert b["mode"] == "in_place" and b["changed"] == [f"devices.{DEVICE_NAME}"]
            time.sleep(1.5)
            assert coils(plc.sim.port)[SIREN] is True

            # 3. the siren removed: its coil is written back to normal before it is closed
            config.write_text(base + STATS_TT)
            agent.signal(signal.SIGHUP)
            agent.wait_log("reload_outputs", count=3)
            until("the removed siren goes quiet", lambda: not coils(plc.sim.port)[SIREN], 5)
            log3 = agent.log()
    finally:
        code = agent.stop()
        line.close()
        plc.close()
    assert code == 0
    outs = [ln.split("reload_outputs ", 1)[1] for ln in log3.splitlines() if "reload_outputs" in ln]
    assert outs == [
        'outputs=1 detail="built= dropped="',  # `when` only: the same writer, a new policy
        'outputs=1 detail="built=siren dropped=siren"',  # its device's timeout changed
        'outputs=0 detail="built= dropped=siren"',
    ]
    reloads = [ln for ln in log2.splitlines() if "reload_buses" in ln]
    assert len(reloads) == 1 and f"127.0.0.1:{plc.sim.port}" in reloads[0], reloads
    assert "serial:" not in reloads[0]  # the gas controller was not reconnected
    # (a PLC read may time out on a loaded machine: the simulator shares this process)
    assert "device_lost device=gas-controller" not in log3
    assert log3.count(" ready devices") == 1
    assert "restarting" not in log3 and "Traceback" not in log3, log3[-3000:]
    high = [r for r in records(data, Stream.ALARM) if r["tag"] == "GT-301"]
    assert [r["event"] for r in high] == ["raise"]  # one occurrence through three reloads
