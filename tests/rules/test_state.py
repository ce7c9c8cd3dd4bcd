"""Alarm state across restarts (design/RULES.md 1.1) through ``safeedge rules replay --state``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import cmd_rules
from rules.replay import load_rules, parse_trace, replay, replay_with_state

RULES = """
[[rules]]
tags = ["CH4"]
high = 1.0
high_high = 1.5
high_high_deadband = 0.5
latch = true
"""
HEADER = "ts_ms,tag,value,quality\n"


def cli(tmp_path: Path, rules: str, trace: str, state: Path) -> list[dict[str, object]]:
    (tmp_path / "r.toml").write_text(rules, encoding="utf-8")
    (tmp_path / "t.csv").write_text(HEADER + trace, encoding="utf-8")
    parser = argparse.ArgumentParser(prog="safeedge")
    cmd_rules.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        ["rules", "replay", "--rules", str(tmp_path / "r.toml"),
         "--trace", str(tmp_path / "t.csv"), "--state", str(state)]
    )  # fmt: skip
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert args.func(args) == 0
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_level_2_alarm_continues_after_a_restart_and_clears_later(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    first = cli(tmp_path, RULES, "0,CH4,0.5,\n1000,CH4,1.6,\n", state)
    assert [(e["event"], e["level"]) for e in first] == [("raise", 2)]
    saved = json.loads(state.read_text())
    assert saved["tags"]["CH4"]["alarms"]["high"]["level"] == 2
    assert saved["tags"]["CH4"]["alarms"]["high"]["raise_ts_ms"] == 1000
    # after the restart: still high → nothing; below the deadband → return (latched, unacked)
    second = cli(tmp_path, RULES, "5000,CH4,1.4,\n6000,CH4,0.5,\n7000,CH4,,ack\n", state)
    assert [(e["event"], e["level"]) for e in second] == [("return", 0), ("clear", 0)]
    assert json.loads(state.read_text())["tags"] == {}


def test_an_acknowledgement_before_the_restart_still_holds(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    cli(tmp_path, RULES, "0,CH4,1.2,\n500,CH4,,ack\n", state)
    after = cli(tmp_path, RULES, "1000,CH4,0.2,\n", state)
    assert [(e["event"], e["level"]) for e in after] == [("clear", 0)]  # no return, no re-ack


def test_a_latched_alarm_that_returned_unacknowledged_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    events = cli(tmp_path, RULES, "0,CH4,1.2,\n1000,CH4,0.2,\n", state)
    assert [e["event"] for e in events] == ["raise", "return"]
    after = cli(tmp_path, RULES, "2000,CH4,0.2,\n3000,CH4,,ack\n", state)
    assert [(e["event"], e["ts_ms"]) for e in after] == [("clear", 3000)]


def test_changed_parameters_clear_open_alarms_with_config_changed(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    cli(tmp_path, RULES, "0,CH4,1.6,\n", state)
    changed = RULES.replace("high = 1.0", "high = 1.1")
    after = cli(tmp_path, changed, "1000,CH4,1.6,\n", state)
    assert [(e["event"], e["level"], e.get("reason")) for e in after] == [
        ("clear", 0, "config_changed"),
        ("raise", 2, None),  # then evaluated from level 0 with the new parameters
    ]


def test_a_removed_tag_clears_its_open_alarms_at_the_start(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    cli(tmp_path, RULES, "0,CH4,1.6,\n", state)
    other = RULES.replace('"CH4"', '"O2"')
    after = cli(tmp_path, other, "1000,O2,0.1,\n", state)
    assert after == [
        {"ts_ms": 1000, "tag": "CH4", "alarm": "high", "event": "clear", "level": 0,
         "value": None, "reason": "config_changed"}
    ]  # fmt: skip


def test_a_restored_fault_clears_at_the_first_valid_sample(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    cli(tmp_path, RULES, "0,CH4,,bad\n", state)
    assert json.loads(state.read_text())["tags"]["CH4"]["alarms"]["fault"]["reason"] == "quality"
    after = cli(tmp_path, RULES, "1000,CH4,0.3,\n", state)
    assert [(e["alarm"], e["event"]) for e in after] == [("fault", "clear")]


SPLIT_RULES = """
[[rules]]
tags = ["A", "B"]
high = 10.0
high_high = 20.0
low = -10.0
deadband = 1.0
latch = true
range = [-50.0, 50.0]
"""

_row = st.tuples(
    st.sampled_from(["A", "B"]),
    st.one_of(st.floats(-60, 60, allow_nan=False), st.just(float("nan"))),
    st.sampled_from(["good", "good", "good", "bad", "ack"]),
)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(_row, min_size=2, max_size=40), cut=st.integers(min_value=1, max_value=39))
def test_splitting_a_trace_with_the_state_gives_the_events_of_one_run(
    rows: list[tuple[str, float, str]], cut: int
) -> None:
    lines = [
        f"{1000 * i},{tag},{'' if q == 'ack' else v},{q}" for i, (tag, v, q) in enumerate(rows)
    ]
    cut = min(cut, len(lines) - 1)
    rules = load_rules(SPLIT_RULES, "r.toml")
    whole = replay(rules, parse_trace(HEADER + "\n".join(lines), "t.csv"), "r.toml")
    head = parse_trace(HEADER + "\n".join(lines[:cut]), "t.csv")
    tail = parse_trace(HEADER + "\n".join(lines[cut:]), "t.csv")
    first, state = replay_with_state(rules, head, "r.toml", state={})
    second, _ = replay_with_state(rules, tail, "r.toml", state=state)
    assert first + second == whole


def test_a_state_file_that_is_not_one_is_bad_input(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text('{"format": "other", "version": 1, "tags": {}}')
    (tmp_path / "r.toml").write_text(RULES, encoding="utf-8")
    (tmp_path / "t.csv").write_text(HEADER, encoding="utf-8")
    parser = argparse.ArgumentParser(prog="safeedge")
    cmd_rules.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        ["rules", "replay", "--rules", str(tmp_path / "r.toml"),
         "--trace", str(tmp_path / "t.csv"), "--state", str(state)]
    )  # fmt: skip
    assert args.func(args) == 2


pytestmark = pytest.mark.filterwarnings("error")
