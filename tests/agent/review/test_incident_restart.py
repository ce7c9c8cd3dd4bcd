"""An incident open when the agent is SIGKILLed, against a real agent process: resumed when its
alarm is still active after the restart (the same occurrence, design/RULES.md 1.1), else closed
with reason ``interrupted`` at the last time recorded (docs/review.md)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.review.history import KINDS, History
from agent.review.incident import Incident, incidents_from
from agent.review.kpi import alarm_kpis
from buffer.record import Stream
from tests.support.agentproc import AgentProc, GasLine, agent_config, records, wait_for

pytestmark = pytest.mark.integration

RECORDER = "\n[review.recorder]\npre_s = 5.0\npost_s = 1.0\n"


@pytest.fixture
def line() -> Iterator[GasLine]:
    gas = GasLine()
    yield gas
    gas.close()


def _docs(data: Path) -> list[dict[str, Any]]:
    return records(data, stream=Stream.INCIDENT)


def _incidents(data: Path) -> list[Incident]:
    return incidents_from(_docs(data))


def _killed_during_a_level_2_alarm(config: Path, data: Path, line: GasLine) -> int:
    """Start, raise GT-301 to level 2, wait for samples after the open, SIGKILL; the newest
    sample ts recorded in the incident."""
    line.value = 60.0
    agent = AgentProc(config)
    try:
        agent.wait_log("event=raise")
        wait_for(
            lambda: [d["type"] for d in _docs(data)].count("samples") >= 3,
            note="incident samples after the open",
        )
    finally:
        agent.kill()  # SIGKILL: no shutdown path runs, nothing closes the incident
    (inc,) = _incidents(data)
    assert inc.reason is None  # open on disk
    return max(p.ts for p in inc.points)


def test_an_incident_whose_alarm_is_still_active_after_kill_9_is_resumed(
    tmp_path: Path, line: GasLine
) -> None:
    data = tmp_path / "data"
    config = tmp_path / "agent.toml"
    config.write_text(agent_config(data_dir=data, line=line.path, extra=RECORDER))
    last_before = _killed_during_a_level_2_alarm(config, data, line)
    again = AgentProc(config)
    try:
        again.wait_log("incidents_restored resumed=1 interrupted=0")
        wait_for(
            lambda: max(p.ts for p in _incidents(data)[0].points) > last_before + 1000,
            note="samples after the restart",
        )
        line.value = 5.0
        again.wait_log("event=clear")
        wait_for(lambda: _incidents(data)[0].reason is not None, note="the close")
    finally:
        assert again.stop() == 0
    (inc,) = _incidents(data)  # one incident across the restart, not two
    assert inc.reason == "all_clear"
    assert [d["type"] for d in _docs(data)].count("open") == 1
    high = [(e["event"], e["level"]) for e in inc.events if e["alarm"] == "high"]
    assert high == [("raise", 2), ("clear", 0)]  # (a loaded machine may add a comm fault)
    ts = sorted({p.ts for p in inc.points})
    assert ts[0] < last_before < ts[-1]  # before and after the kill, one id
    with History.open(path=data / "buffer.db", key_file=data / "buffer.key", gateway_id="GW1") as h:
        log = h.alarms()
    is_high = log.kind == KINDS.index("high")
    assert len(set(log.occ[is_high].tolist())) == 1  # the alarm kept its id across the kill
    k = alarm_kpis(log, from_ms=ts[0] - 60_000, to_ms=ts[-1] + 60_000, fleeting_ms=1, device_of={})
    assert [(a.tag, a.alarm, a.count) for a in k.bad_actors if a.alarm == "high"] == [
        ("GT-301", "high", 1)
    ]  # one occurrence, not split in two by the kill
    assert not [s for s in k.standing_list if s[1] == "high"]


def test_an_incident_whose_alarm_is_gone_after_kill_9_is_closed_interrupted(
    tmp_path: Path, line: GasLine
) -> None:
    data = tmp_path / "data"
    config = tmp_path / "agent.toml"
    text = agent_config(data_dir=data, line=line.path, extra=RECORDER)
    config.write_text(text)
    last_before = _killed_during_a_level_2_alarm(config, data, line)
    line.value = 5.0
    config.write_text(text.replace("GT-301", "GT-302"))  # the tag (and its alarm) is gone
    again = AgentProc(config)
    try:
        again.wait_log("incidents_restored resumed=0 interrupted=1")
        again.wait_log(" ready devices")
    finally:
        assert again.stop() == 0
    (inc,) = _incidents(data)
    assert inc.reason == "interrupted" and inc.closed_ms == last_before
    closes = [d for d in _docs(data) if d["type"] == "close"]
    assert len(closes) == 1  # the clean stop found nothing else open
