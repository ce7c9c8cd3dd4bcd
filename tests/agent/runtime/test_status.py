"""safeedge status, the metrics endpoint, the health event and STATUS=, against a real agent."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.codec import encode_envelope
from buffer.record import Stream
from central.schema import SchemaValidator
from provisioning.localbroker import free_port
from tests.support.agentproc import AgentProc, GasLine, agent_config, env, records, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def line() -> Iterator[GasLine]:
    gas = GasLine()
    yield gas
    gas.close()


def _status(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "status", *args],
        capture_output=True, text=True, timeout=60, env=env(),
    )  # fmt: skip


def test_status_socket_metrics_health_and_systemd_status_of_a_running_agent(
    tmp_path: Path, line: GasLine
) -> None:
    data = tmp_path / "data"
    config = tmp_path / "agent.toml"
    port = free_port()
    ops = "\n[operations]\nhealth_interval_s = 1.0\n"
    ops += f"[operations.metrics]\nenabled = true\nport = {port}\n"
    config.write_text(agent_config(data_dir=data, line=line.path, extra=ops))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify_path = tmp_path / "notify.sock"
    notify.bind(str(notify_path))
    notify.settimeout(30)
    line.value = 60.0
    agent = AgentProc(config, extra_env={"NOTIFY_SOCKET": str(notify_path)})
    try:
        agent.wait_log("event=raise")
        assert notify.recv(4096) == b"READY=1"
        first = notify.recv(4096).decode()
        assert first.startswith("STATUS=0/1 devices online, 0 alarms open")  # at ready
        for _ in range(10):  # kept current: each health tick (1 s here) sends the new line
            status = notify.recv(4096).decode()
            if status.startswith("STATUS=1/1 devices online, 1 alarm open"):
                break
        assert status.startswith("STATUS=1/1 devices online, 1 alarm open, backlog"), status
        sock = data / "status.sock"
        mode = stat.S_IMODE(os.stat(sock).st_mode)
        assert mode == 0o660, oct(mode)
        done = _status("--config", str(config), "--json")
        assert done.returncode == 0, done.stderr
        doc = json.loads(done.stdout)
        assert doc["gateway"] == "GW1" and doc["degraded"] == []
        (dev,) = doc["devices"]
        assert dev["name"] == "gas-controller" and dev["state"] == "online"
        assert dev["driver"] == "serial_line"  # the config's word, not a class name
        assert dev["rtt_p50_ms"] is not None and dev["last_good_ms"] is not None
        (alarm,) = doc["alarms"]
        assert (alarm["tag"], alarm["alarm"], alarm["level"], alarm["acked"]) == (
            "GT-301", "high", 2, False,
        )  # fmt: skip
        assert alarm["alarm_id"].startswith("GW1:GT-301:high:")
        assert doc["buffer"]["file_bytes"] > 0 and doc["buffer"]["disk_free_bytes"] > 0
        tele = doc["buffer"]["streams"]["telemetry"]
        assert tele["undelivered"] >= 0 and tele["days_held"] > 30 and tele["forwarded"]

        def incident() -> dict[str, object]:  # the level-2 alarm opened one (stats are cached)
            out = _status("--config", str(config), "--json").stdout
            return dict(json.loads(out)["buffer"]["streams"]["incident"])

        wait_for(lambda: int(incident()["local_records"]) >= 1, note="the incident's records")
        inc = incident()
        assert inc["forwarded"] is False and inc["undelivered"] == 0
        assert inc["oldest_undelivered_ms"] is None
        assert doc["uplink"]["state"] == "disabled"
        table = _status("--socket", str(sock))
        assert table.returncode == 0, table.stderr
        assert "gas-controller" in table.stdout and "GT-301" in table.stdout
        assert "not degraded" in table.stdout and "local (" in table.stdout
        wait_for(lambda: b"safeedge_device_online" in _scrape(port), note="metrics published")
        body = _scrape(port).decode()
        assert 'safeedge_device_online{device="gas-controller"} 1.0' in body
        assert 'safeedge_alarms_open{level="2"} 1.0' in body
        assert "safeedge_polls_total" in body and "safeedge_buffer_disk_free_bytes" in body
        assert 'safeedge_buffer_undelivered_records{stream="telemetry"}' in body
        wait_for(lambda: _health(data), note="a health event")
    finally:
        assert agent.stop() == 0
        notify.close()
    validator = SchemaValidator()
    health = _health(data)[0]
    wire = encode_envelope(
        site="S1", gateway="GW1", stream="event", seq=1, ts_ms=health["ts"], backfill=False,
        body=json.dumps(health).encode(),
    )  # fmt: skip
    assert validator.errors("event", wire) == []
    assert health["alarms_active"] == 1 and health["devices"][0]["state"] == "online"
    assert not (data / "status.sock").exists()  # removed at stop


def test_status_without_an_agent_exits_1_naming_the_socket(tmp_path: Path) -> None:
    done = _status("--socket", str(tmp_path / "none.sock"))
    assert done.returncode == 1
    assert "none.sock" in done.stderr


def _scrape(port: int) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return bytes(r.read())


def _health(data: Path) -> list[dict[str, object]]:
    return [e for e in records(data, Stream.EVENT) if e["kind"] == "health"]
