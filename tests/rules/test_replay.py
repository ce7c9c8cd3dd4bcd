"""``safeedge rules replay``: the black-box contract at the end of design/RULES.md."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from agent import cmd_rules

RULES = """
[[rules]]
match = "CH4-*"
template = "coal-ch4-face"

[[rules]]
tags = ["CH4-2"]
latch = true
"""

TRACE = """ts_ms,tag,value,quality
0,CH4-1,0.5,good
0,CH4-2,0.5,
1000,CH4-1,1.6,good
1000,CH4-2,1.2,good
2000,CH4-1,,bad
2000,CH4-2,0.4,good
3000,CH4-1,0.9,good
3500,CH4-2,,ack
4000,O2-1,20.9,good
"""


def run(tmp_path: Path, rules: str, trace: str) -> int:
    (tmp_path / "r.toml").write_text(rules, encoding="utf-8")
    (tmp_path / "t.csv").write_text(trace, encoding="utf-8")
    parser = argparse.ArgumentParser(prog="safeedge")
    cmd_rules.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        ["rules", "replay", "--rules", str(tmp_path / "r.toml"), "--trace", str(tmp_path / "t.csv")]
    )
    return int(args.func(args))


def test_replay_prints_one_json_event_per_line_in_processing_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(tmp_path, RULES, TRACE) == 0
    out = capsys.readouterr()
    assert out.err == ""
    events = [json.loads(line) for line in out.out.splitlines()]
    assert events == [
        {"ts_ms": 1000, "tag": "CH4-1", "alarm": "high", "event": "raise", "level": 2,
         "value": 1.6, "limit": 1.5},
        {"ts_ms": 1000, "tag": "CH4-2", "alarm": "high", "event": "raise", "level": 1,
         "value": 1.2, "limit": 1.0},
        {"ts_ms": 2000, "tag": "CH4-1", "alarm": "fault", "event": "raise", "level": 1,
         "value": None, "reason": "quality"},
        {"ts_ms": 2000, "tag": "CH4-2", "alarm": "high", "event": "return", "level": 0,
         "value": 0.4},
        {"ts_ms": 3000, "tag": "CH4-1", "alarm": "fault", "event": "clear", "level": 0,
         "value": 0.9},
        {"ts_ms": 3000, "tag": "CH4-1", "alarm": "high", "event": "clear", "level": 0,
         "value": 0.9},
        {"ts_ms": 3500, "tag": "CH4-2", "alarm": "high", "event": "clear", "level": 0,
         "value": None},
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("trace", "where"),
    [
        ("ts,tag,value,quality\n", "t.csv:1: header"),
        ("ts_ms,tag,value,quality\nx,A,1,good\n", "t.csv:2: ts_ms"),
        ("ts_ms,tag,value,quality\n1,A,1,good\n2,A,abc,good\n", "t.csv:3: value"),
        ("ts_ms,tag,value,quality\n1,A,,good\n", "t.csv:2: value"),
        ("ts_ms,tag,value,quality\n1,A,1,maybe\n", "t.csv:2: quality"),
        ("ts_ms,tag,value,quality\n1,,1,good\n", "t.csv:2: tag"),
        ("ts_ms,tag,value,quality\n1,A,1\n", "t.csv:2: row"),
        ("ts_ms,tag,value,quality\n5,A,1,good\n6,B,1,good\n4,A,1,ack\n", "t.csv:4: ts_ms"),
    ],
)
def test_a_bad_trace_exits_2_naming_file_line_and_field_with_nothing_on_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], trace: str, where: str
) -> None:
    assert run(tmp_path, RULES, trace) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert where in out.err


@pytest.mark.parametrize(
    ("rules", "where"),
    [
        ("[[rules]\n", "r.toml:1: toml"),
        ("[[rules]]\ntags = ['A']\nhihg = 1\n", "r.toml: rules: Object contains unknown field"),
        ("[gateway]\nsite = 'x'\n", "r.toml: rules: Object contains unknown field `gateway`"),
        ("[[rules]]\ntags = ['A']\nhigh = 2.0\nhigh_high = 1.0\n", "rules[0].high: tag 'A'"),
        ("[[rules]]\nmatch = 'Z*'\nhigh = 1.0\n", "rules[0].match"),
    ],
)
def test_bad_rules_exit_2_naming_file_and_key_with_nothing_on_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rules: str, where: str
) -> None:
    assert run(tmp_path, rules, "ts_ms,tag,value,quality\n1,A,1,good\n") == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert where in out.err


def test_a_tag_named_by_the_rules_but_absent_from_the_trace_is_fine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = "[[rules]]\ntags = ['A', 'NOT-IN-TRACE']\nhigh = 1.0\n"
    assert run(tmp_path, rules, "ts_ms,tag,value,quality\n1,A,nan,good\n") == 0
    assert json.loads(capsys.readouterr().out)["reason"] == "nan"


def test_a_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="safeedge")
    cmd_rules.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["rules", "replay", "--rules", "nope.toml", "--trace", "nope.csv"])
    assert args.func(args) == 2
    assert "nope.toml: file:" in capsys.readouterr().err
