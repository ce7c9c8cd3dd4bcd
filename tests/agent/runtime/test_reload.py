"""Reload on SIGHUP and the last good config, against a real agent process."""

from __future__ import annotations

import json
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.cmd_status import query
from agent.codec import encode_envelope
from buffer.record import Stream
from central.schema import SchemaValidator
from tests.support.agentproc import AgentProc, GasLine, agent_config, records, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def line() -> Iterator[GasLine]:
    gas = GasLine()
    yield gas
    gas.close()


def _events(data: Path, kind: str) -> list[dict[str, Any]]:
    """The events of ``kind``, each checked against the shipped event schema."""
    out = [e for e in records(data, Stream.EVENT) if e["kind"] == kind]
    for e in out:
        wire = encode_envelope(
            site="S1", gateway="GW1", stream="event", seq=1, ts_ms=e["ts"], backfill=False,
            body=json.dumps(e).encode(),
        )  # fmt: skip
        assert VALIDATOR.errors("event", wire) == [], e
    return out


VALIDATOR = SchemaValidator()


def test_sighup_applies_a_good_edit_in_place_and_rejects_a_bad_one(
    tmp_path: Path, line: GasLine
) -> None:
    data = tmp_path / "data"
    config = tmp_path / "agent.toml"
    config.write_text(agent_config(data_dir=data, line=line.path))
    line.value = 30.0
    agent = AgentProc(config)
    try:
        agent.wait_log("event=raise")
        # a bad edit: the old config keeps running, config_rejected names the key
        config.write_text(
            agent_config(data_dir=data, line=line.path).replace("high = 25", "hihg = 25")
        )
        agent.signal(signal.SIGHUP)
        agent.wait_log("config_rejected")
        wait_for(lambda: len(_events(data, "config_rejected")) == 1, note="config_rejected")
        # a good edit of the rules: applied in place, the changed tag's alarm ends
        config.write_text(agent_config(data_dir=data, line=line.path, high=28.0))
        agent.signal(signal.SIGHUP)
        agent.wait_log("config_applied")
        agent.wait_log("event=raise", count=2)  # the new occurrence under the new limit
        log = agent.log()
    finally:
        assert agent.stop() == 0
    assert "device_lost" not in log and log.count(" ready devices") == 1  # the device kept its line
    rejected = _events(data, "config_rejected")[0]
    assert any("hihg" in e for e in rejected["errors"])
    applied = _events(data, "config_applied")[0]
    assert applied["changed"] == ["rules"] and applied["mode"] == "in_place"
    assert applied["tags_changed"] == ["GT-301"]
    assert applied["old_hash"] != applied["new_hash"]
    high = [r for r in records(data) if r["alarm"] == "high"]
    assert [(r["event"], r.get("reason")) for r in high] == [
        ("raise", None),
        ("clear", "config_changed"),
        ("raise", None),
    ]
    assert json.loads((data / "last-good.json").read_text())["gateway"] == "GW1"


def _second_device(path: str, poll_s: float = 0.5) -> str:
    return f"""
[[serial_ports]]
name = "gas-line-2"
path = "{path}"
baudrate = 115200

[[devices]]
driver = "serial_line"
name = "gas-2"
serial_port = "gas-line-2"
poll_interval_s = {poll_s}
timeout_s = 0.5
framing = "start_end"
start = "$"
end = "\\r\\n"
checksum = "xor"
key_field = 1

[[devices.tags]]
name = "GT-302"
field = 2
key = "1"
range = [0.0, 100.0]
"""


def test_sighup_with_one_device_changed_rebuilds_only_that_line(
    tmp_path: Path, line: GasLine
) -> None:
    data = tmp_path / "data"
    config = tmp_path / "agent.toml"
    other = GasLine()
    base = agent_config(data_dir=data, line=line.path)
    config.write_text(base + _second_device(other.path))
    line.value = 30.0
    agent = AgentProc(config)
    try:
        agent.wait_log("event=raise")
        config.write_text(base + _second_device(other.path, poll_s=0.7))
        agent.signal(signal.SIGHUP)
        out = agent.wait_log("reload_buses")
        agent.wait_log("config_applied")
    finally:
        assert agent.stop() == 0
        other.close()
    assert f"reload_buses stopped=serial:{other.path} started=serial:{other.path}" in out
    assert "restarting" not in out and out.count(" ready devices") == 1
    applied = _events(data, "config_applied")[0]
    assert applied["mode"] == "in_place" and applied["changed"] == ["devices.gas-2"]
    high = [r for r in records(data) if r["alarm"] == "high"]
    assert [r["event"] for r in high] == ["raise"]  # the other line's alarm went on


def test_sighup_with_a_tag_added_runs_again_with_the_new_config(
    tmp_path: Path, line: GasLine
) -> None:
    data = tmp_path / "data"
    config = tmp_path / "agent.toml"
    other = GasLine()
    config.write_text(agent_config(data_dir=data, line=line.path))
    line.value = 30.0
    agent = AgentProc(config)
    try:
        agent.wait_log("event=raise")
        config.write_text(agent_config(data_dir=data, line=line.path) + _second_device(other.path))
        agent.signal(signal.SIGHUP)
        agent.wait_log("restarting")
        agent.wait_log(" ready devices", count=2)
    finally:
        assert agent.stop() == 0
        other.close()
    applied = _events(data, "config_applied")[0]
    assert applied["mode"] == "restart"
    assert "devices.gas-2" in applied["changed"] and "serial_ports" in applied["changed"]
    high = [r for r in records(data) if r["alarm"] == "high"]
    assert [r["event"] for r in high] == ["raise"]  # the alarm continued across the re-run


def test_a_broken_config_at_start_runs_the_last_good_one_degraded(
    tmp_path: Path, line: GasLine
) -> None:
    data = tmp_path / "data"
    config = tmp_path / "agent.toml"
    config.write_text(agent_config(data_dir=data, line=line.path))
    agent = AgentProc(config)
    try:
        agent.wait_log(" ready devices")
    finally:
        assert agent.stop() == 0
    config.write_text(agent_config(data_dir=data, line=line.path) + "\n[nonsense]\n")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # what systemd reads STATUS= from
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(30)
    again = AgentProc(config, extra_env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock")})
    try:
        out = again.wait_log(" ready devices")
        assert "running the last good config" in out
        wait_for(lambda: len(_events(data, "config_rejected")) == 1, note="config_rejected")
        doc = query(data / "status.sock")
        assert doc["degraded"] and doc["degraded"][0].startswith("config rejected")
        sent = [notify.recv(4096).decode() for _ in range(2)]  # READY=1, then the status line
        assert sent[0] == "READY=1"
        assert sent[1].startswith("STATUS=DEGRADED: config rejected"), sent
    finally:
        assert again.stop() == 0
        notify.close()
    assert any("nonsense" in e for e in _events(data, "config_rejected")[0]["errors"])


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "config_applied", "ts": 1, "old_hash": "ab", "new_hash": "cd", "changed": [],
         "mode": "sometimes"},
        {"kind": "config_rejected", "ts": 1, "config_hash": "ab", "errors": []},
        {"kind": "health", "ts": 1, "uptime_s": 1},
    ],
)  # fmt: skip
def test_the_event_schema_refuses_malformed_operations_events(body: dict[str, Any]) -> None:
    wire = encode_envelope(
        site="S1", gateway="GW1", stream="event", seq=1, ts_ms=1, backfill=False,
        body=json.dumps(body).encode(),
    )  # fmt: skip
    assert VALIDATOR.errors("event", wire) != []


def test_a_tag_removed_by_a_reload_ends_its_open_alarm_with_config_changed(
    tmp_path: Path, line: GasLine
) -> None:
    data = tmp_path / "data"
    config = tmp_path / "agent.toml"
    other = GasLine()
    rule = '\n[[rules]]\ntags = ["GT-302"]\nhigh = 25.0\n'
    base = agent_config(data_dir=data, line=line.path)
    config.write_text(base + _second_device(other.path) + rule)
    other.value = 30.0
    agent = AgentProc(config)
    try:
        agent.wait_log("event=raise")
        config.write_text(base)  # gas-2 and its tag GT-302 are gone
        agent.signal(signal.SIGHUP)
        agent.wait_log(" ready devices", count=2)
        agent.wait_log("event=clear")
    finally:
        assert agent.stop() == 0
        other.close()
    gone = [r for r in records(data) if r["tag"] == "GT-302"]
    assert [(r["event"], r.get("reason")) for r in gone] == [
        ("raise", None),
        ("clear", "config_changed"),
    ]
    assert gone[0]["alarm_id"] == gone[1]["alarm_id"]
