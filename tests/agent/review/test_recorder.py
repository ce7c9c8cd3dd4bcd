"""The incident recorder as a component: fed sample columns and alarm events, it emits the
incident records; here they are sealed into a real buffer and read back as incidents."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from agent.config import ConfigError, loads_config
from agent.review.config import RecorderConfig
from agent.review.history import History
from agent.review.incident import incident_report, incidents_from
from agent.review.recorder import IncidentRecorder
from buffer import Store, Stream
from provisioning.simulator import tank_farm_config
from rules import RuleEngine
from rules.config import RuleConfig
from rules.events import AlarmEvent
from tests.agent.review.conftest import GW

T0 = 1_780_000_000_000
NAMES = ("A1", "A2", "B1")
DEVICES = ("plc-a", "plc-a", "plc-b")


def _recorder(**cfg: object) -> IncidentRecorder:
    return IncidentRecorder(
        config=RecorderConfig(**cfg),  # type: ignore[arg-type]
        tag_names=NAMES,
        devices=DEVICES,
        units=("%LEL", "%LEL", "kPa"),
        limits={"A1": {"high": 25.0, "high_high": 50.0}},
    )


def _tick(rec: IncidentRecorder, second: int, events: list[AlarmEvent] = ()) -> list[bytes]:  # type: ignore[assignment]
    ts = T0 + second * 1000
    return rec.feed(
        np.arange(3, dtype=np.int32),
        np.full(3, ts, np.int64),
        np.array([float(second), 1.0, 2.0]),
        np.zeros(3, np.uint8),
        list(events),
    )


def _docs(bodies: list[bytes]) -> list[dict[str, object]]:
    return [json.loads(b) for b in bodies]


def _ev(second: int, tag: int, event: str, level: int, alarm: str = "high") -> AlarmEvent:
    return AlarmEvent(T0 + second * 1000, tag, alarm, event, level, 1.0)  # type: ignore[arg-type]


def test_a_level_2_escalation_opens_an_incident_with_the_pre_trigger_window_of_its_device() -> None:
    rec = _recorder(pre_s=600.0, post_s=600.0)
    out: list[bytes] = []
    for s in range(900):
        events = {300: [_ev(300, 0, "raise", 1)], 899: [_ev(899, 0, "escalate", 2)]}.get(s, [])
        out += _tick(rec, s, events)
    docs = _docs(out)
    assert [d["type"] for d in docs] == [
        "open",
        "samples",
        "alarms",
    ]  # the level-1 raise opened nothing
    opened = docs[0]
    assert opened["incident"] == rec.open_incidents[0] and str(opened["incident"]).endswith("-A1")
    assert opened["tags"] == ["A1", "A2"] and opened["units"] == {"A1": "%LEL", "A2": "%LEL"}
    assert opened["active"] == [["A1", "high", 2, T0 + 300_000]]
    assert opened["limits"] == {"A1": {"high": 25.0, "high_high": 50.0}}
    points = docs[1]["points"]
    assert isinstance(points, list)
    a1 = [p[1] for p in points if p[0] == "A1"]
    assert a1 == [T0 + s * 1000 for s in range(299, 900)]  # every sample of the last 600 s
    assert {p[0] for p in points} == {"A1", "A2"}


def test_the_incident_follows_its_tags_until_all_clear_plus_post_window() -> None:
    rec = _recorder(pre_s=10.0, post_s=30.0)
    out: list[bytes] = []
    script = {
        20: [_ev(20, 0, "raise", 2)],
        25: [_ev(25, 1, "raise", 2)],  # A2 joins, no new one
        40: [_ev(40, 0, "clear", 0)],
        50: [_ev(50, 1, "clear", 0)],
    }
    for s in range(100):
        out += _tick(rec, s, script.get(s, []))
    docs = _docs(out)
    assert [d["type"] for d in docs].count("open") == 1
    close = docs[-1]
    assert close["type"] == "close" and close["reason"] == "all_clear"
    assert close["closed_ms"] == T0 + 80_000  # all clear at 50 s + 30 s
    (inc,) = incidents_from(docs)
    assert sorted({p.ts for p in inc.points}) == [T0 + s * 1000 for s in range(10, 81)]
    assert [(e["tag"], e["event"]) for e in inc.events] == [
        ("A1", "raise"),
        ("A2", "raise"),
        ("A1", "clear"),
        ("A2", "clear"),
    ]
    assert rec.open_incidents == []


def test_an_alarm_that_never_clears_is_closed_at_max_s_and_groups_add_tags() -> None:
    rec = _recorder(pre_s=5.0, post_s=10.0, max_s=60.0, related="none", groups=(("A1", "B1"),))
    out: list[bytes] = []
    for s in range(120):
        out += _tick(rec, s, [_ev(10, 0, "raise", 2)] if s == 10 else [])
    docs = _docs(out)
    assert docs[0]["tags"] == ["A1", "B1"]
    assert docs[-1]["type"] == "close" and docs[-1]["reason"] == "max_duration"
    assert docs[-1]["closed_ms"] == T0 + 70_000


def test_levels_and_tags_choose_what_opens_an_incident_and_the_ring_is_bounded() -> None:
    rec = _recorder(levels=(1, 2), tags=("B1",), pre_s=1800.0, max_ring_points=1000)
    out: list[bytes] = []
    for s in range(1300):
        events = {
            100: [_ev(100, 0, "raise", 2)],
            1250: [_ev(1250, 2, "raise", 1, alarm="low")],
        }.get(s, [])
        out += _tick(rec, s, events)
    docs = _docs(out)
    assert docs[0]["type"] == "open" and docs[0]["trigger"]["tag"] == "B1"  # type: ignore[index]
    assert rec.ring_dropped > 0  # only B1 is watched (1 point a tick): 1000 points kept at most
    kept = [p for d in docs if d["type"] == "samples" for p in d["points"]]  # type: ignore[union-attr]
    assert {p[0] for p in kept} == {"B1"} and 1000 <= len(kept) <= 1051
    assert len(rec.close_all(T0 + 1_301_000)) == 1


def test_engine_events_make_an_incident_sealed_in_the_buffer_and_read_back(
    make_store: Callable[[], Store], store_paths: dict[str, Path]
) -> None:
    engine = RuleEngine(
        list(NAMES),
        [
            RuleConfig(
                tags=("A1",), high=25.0, high_high=50.0, trend_window_s=30.0, trend_horizon_s=120.0
            )
        ],
    )
    rec = _recorder(pre_s=120.0, post_s=20.0)
    store = make_store()
    tag = np.arange(3, dtype=np.int32)
    for s in range(400):
        ts = np.full(3, T0 + s * 1000, np.int64)
        a1 = 5.0 + max(0.0, min(s - 100, 100)) * 0.6 - max(0.0, s - 250) * 0.8  # ramp up, then down
        vals = np.array([max(a1, 2.0), 1.0, 2.0])
        q = np.zeros(3, np.uint8)
        events = engine.evaluate(tag, ts, vals, q)
        bodies = rec.feed(tag, ts, vals, q, events)
        if bodies:
            store.append(Stream.INCIDENT, bodies, created_ms=T0 + s * 1000)
    store.close()
    with History.open(**store_paths, gateway_id=GW) as h:
        (inc,) = incidents_from(h.incident_records())
    assert inc.trigger["event"] in ("raise", "escalate") and inc.trigger["level"] == 2
    assert inc.reason == "all_clear"
    report = incident_report(inc, alarms=None)
    a1 = next(t for t in report["tags"] if t["tag"] == "A1")
    assert a1["pre_trigger_samples"] == 120  # every 1 Hz sample of the 120 s before it
    assert a1["peak"] == 65.0
    assert (
        a1["beyond_ms"]["high_high"] > 0 and a1["beyond_ms"]["high"] > a1["beyond_ms"]["high_high"]
    )


def test_an_unknown_recorder_tag_is_a_config_error_with_its_path() -> None:
    text = tank_farm_config(
        modbus_host="127.0.0.1",
        modbus_port=1502,
        mqtt_host="127.0.0.1",
        mqtt_port=1883,
        data_dir="data",
    )
    bad = text + '\n[review.recorder]\ntags = ["GT-102", "GT-1O2"]\ngroups = [["GT-101", "XX"]]\n'
    with pytest.raises(ConfigError) as err:
        loads_config(bad, source="agent.toml")
    paths = [i.path for i in err.value.issues]
    assert paths == ["review.recorder.tags[1]", "review.recorder.groups[0][1]"]
    assert loads_config(text + '\n[review.recorder]\ntags = ["GT-102"]\n').review.recorder.tags == (
        "GT-102",
    )


def test_the_open_incidents_state_resumes_an_active_alarm_and_closes_the_others() -> None:
    rec = _recorder(pre_s=5.0, post_s=2.0, related="none")
    for s in range(12):
        events = {5: [_ev(5, 0, "raise", 2)], 8: [_ev(8, 2, "raise", 2)]}.get(s, [])
        _tick(rec, s, events)
    state = rec.state()
    ids = rec.open_incidents
    assert [d["last_ms"] for d in json.loads(state)] == [T0 + 11_000] * 2
    again = _recorder(pre_s=5.0, post_s=2.0, related="none")  # after a restart: A1 still active
    closed = _docs(again.restore(state, [("A1", "high", 2, T0 + 5000)]))
    assert closed == [
        {"type": "close", "incident": ids[1], "closed_ms": T0 + 11_000, "reason": "interrupted"}
    ]
    assert again.open_incidents == ids[:1]
    out = _docs(_tick(again, 20) + _tick(again, 21, [_ev(21, 0, "clear", 0)]) + _tick(again, 23))
    assert [(d["type"], d["incident"]) for d in out] == [
        ("samples", ids[0]),
        ("samples", ids[0]),
        ("alarms", ids[0]),
        ("samples", ids[0]),
        ("close", ids[0]),
    ]
    assert out[-1]["reason"] == "all_clear" and out[-1]["closed_ms"] == T0 + 23_000
    assert _recorder().restore(None, []) == [] and _recorder().restore(b"[]", []) == []
    with pytest.raises(ValueError, match="incident recorder state"):
        _recorder().restore(b'[{"incident": 1}]', [])
