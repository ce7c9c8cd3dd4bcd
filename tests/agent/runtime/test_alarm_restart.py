"""Alarm state across restarts, against a real agent process (design/RULES.md 1.1).

The agent reads a gas controller on a real pty; its buffer is read back with StoreReader."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from agent.codec import decode_cmd_result
from agent.commands import sign_command
from central.cmd_sign import build_payload, publish_command
from tests.support.agentproc import AgentProc, GasLine, agent_config, records, wait_for
from tests.support.mosquitto import Broker

pytestmark = pytest.mark.integration


@pytest.fixture
def line() -> Iterator[GasLine]:
    gas = GasLine()
    yield gas
    gas.close()


def _high(data: Path) -> list[dict[str, Any]]:
    return [r for r in records(data) if r["alarm"] == "high"]


def _events(data: Path) -> list[tuple[str, int]]:
    return [(r["event"], r["level"]) for r in _high(data)]


def test_kill_9_during_a_level_2_alarm_continues_the_same_occurrence(
    tmp_path: Path, line: GasLine
) -> None:
    data = tmp_path / "data"
    config = tmp_path / "agent.toml"
    config.write_text(agent_config(data_dir=data, line=line.path))
    line.value = 60.0
    agent = AgentProc(config)
    try:
        agent.wait_log("event=raise")
        wait_for(lambda: _events(data) == [("raise", 2)], note="the raise record")
    finally:
        agent.kill()  # SIGKILL: no shutdown path runs
    again = AgentProc(config)
    try:
        again.wait_log("alarm_state_restored tags=1 open=1")
        again.wait_log(" ready devices")
        n_before = len(records(data))
        wait_for(lambda: len(records(data, stream=_telemetry())) > 0, note="telemetry")
        line.value = 5.0  # below high_high - deadband and below high: clears
        again.wait_log("event=clear")
    finally:
        assert again.stop() == 0
    high = _high(data)
    assert [(r["event"], r["level"]) for r in high] == [("raise", 2), ("clear", 0)]
    assert high[0]["alarm_id"] == high[1]["alarm_id"]
    assert n_before == 1


def test_a_latched_alarm_back_to_normal_survives_a_restart_unacknowledged(
    tmp_path: Path, line: GasLine
) -> None:
    data = tmp_path / "data"
    config = tmp_path / "agent.toml"
    config.write_text(agent_config(data_dir=data, line=line.path, latch=True))
    line.value = 30.0
    agent = AgentProc(config)
    try:
        agent.wait_log("event=raise")
        line.value = 5.0
        agent.wait_log("event=return")
    finally:
        assert agent.stop() == 0
    again = AgentProc(config)
    try:
        again.wait_log("alarm_state_restored tags=1 open=1")
        again.wait_log(" ready devices")
    finally:
        again.kill()
    assert _events(data) == [("raise", 1), ("return", 0)]  # nothing new: still returned, unacked


def test_changed_parameters_clear_the_open_alarm_with_config_changed(
    tmp_path: Path, line: GasLine
) -> None:
    data = tmp_path / "data"
    config = tmp_path / "agent.toml"
    config.write_text(agent_config(data_dir=data, line=line.path))
    line.value = 30.0
    agent = AgentProc(config)
    try:
        agent.wait_log("event=raise")
    finally:
        agent.kill()
    config.write_text(agent_config(data_dir=data, line=line.path, high=28.0))
    again = AgentProc(config)
    try:
        again.wait_log("alarm_state_config_changed tag=GT-301")
        again.wait_log("event=raise")  # the new occurrence, from level 0 with the new limit
    finally:
        assert again.stop() == 0
    high = _high(data)
    assert [(r["event"], r.get("reason")) for r in high] == [
        ("raise", None),
        ("clear", "config_changed"),
        ("raise", None),
    ]
    assert high[0]["alarm_id"] == high[1]["alarm_id"] != high[2]["alarm_id"]


def _telemetry() -> Any:
    from buffer.record import Stream

    return Stream.TELEMETRY


def test_an_acknowledgement_before_a_restart_still_holds_for_the_clear(
    tmp_path: Path, line: GasLine, broker: Broker
) -> None:
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    data = tmp_path / "data"
    config = tmp_path / "agent.toml"
    config.write_text(
        agent_config(
            data_dir=data, line=line.path, latch=True, mqtt_port=broker.port,
            trusted_keys={"ops-test": base64.b64encode(public).decode()},
        )
    )  # fmt: skip
    line.value = 30.0
    agent = AgentProc(config)
    try:
        agent.wait_log("event=raise")
        agent.wait_log("uplink_connected")
        payload = build_payload(
            {"gw": "GW1", "cmd": "ack_alarm", "args": {"tag": "GT-301", "user": "op"}},
            ts_ms=int(time.time() * 1000),
        )
        answer = publish_command(
            host=broker.host, port=broker.port, root="safeedge/v1/S1/GW1",
            message=sign_command(key, "ops-test", payload), wait_s=10,
        )  # fmt: skip
        assert answer is not None and decode_cmd_result(answer).status == "ok"
        agent.wait_log("event=ack")
    finally:
        agent.kill()
    again = AgentProc(config)
    try:
        again.wait_log("alarm_state_restored tags=1 open=1")
        line.value = 5.0
        again.wait_log("event=clear")
    finally:
        assert again.stop() == 0
    high = _high(data)
    # latched and acknowledged before the restart: back to normal is a clear, not a return
    assert [r["event"] for r in high] == ["raise", "ack", "clear"]
    assert len({r["alarm_id"] for r in high}) == 1
