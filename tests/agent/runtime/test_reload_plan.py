"""What a reload changes and whether it applies in place (no I/O: built components only), and
which alarm-output writers a replacement keeps."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.alarm_outputs import AlarmStates
from agent.runtime import Components
from agent.runtime.outputs import OutputSet
from agent.runtime.reload import bus_plan, changes
from agent.runtime.reloaddiff import output_changes, policy_changes
from tests.agent.runtime.conftest import make_components

TT = '\n[[uplink.tags]]\ntags = ["T2"]\npolicy = "stats"\nwindow_s = 10.0\n'
PREC = '\n[[uplink.tags]]\ntags = ["T1"]\nprecision = 1\n'


def _outputs(address: int = 5, level: int = 1) -> str:
    return f"""
[[outputs]]
name = "beacon"
device = "plc-a"
table = "coil"
address = {address}
  [outputs.when]
  min_level = {level}

[[outputs]]
name = "siren"
device = "plc-b"
table = "coil"
address = 1
"""


def _pair(tmp_path: Path, **kw: str) -> tuple[Components, Components]:
    return make_components(tmp_path), make_components(tmp_path, **kw)


@pytest.mark.parametrize(
    ("kw", "changed"),
    [
        ({"uplink_extra": TT}, ["uplink.tags"]),
        ({"uplink_extra": "\n[uplink.policy]\nstats_window_s = 30.0\n"}, ["uplink.policy"]),
        ({"uplink_extra": "\ntelemetry_linger_ms = 200\n"}, ["uplink.telemetry_linger_ms"]),
        ({"uplink_extra": "\n[uplink.report_by_exception]\n"}, ["uplink.report_by_exception"]),
        ({"extra": _outputs()}, ["outputs"]),
    ],
)
def test_shaping_and_output_changes_apply_in_place_without_touching_a_bus(
    tmp_path: Path, kw: dict[str, str], changed: list[str]
) -> None:
    a, b = _pair(tmp_path, **kw)
    assert changes(a.cfg, b.cfg) == changed
    assert bus_plan(a, b, changed) == ({}, {})  # in place, and no device rebuilt


def test_a_broker_change_still_runs_again(tmp_path: Path) -> None:
    a, b = _pair(tmp_path, uplink_extra="\nkeepalive_s = 40\n")
    assert "uplink.keepalive_s" in changes(a.cfg, b.cfg)
    assert bus_plan(a, b, ["uplink.keepalive_s"]) is None
    assert bus_plan(a, b, ["gateway.site"]) is None


def test_the_change_lines_name_each_tag_policy_and_output(tmp_path: Path) -> None:
    a = make_components(tmp_path, extra=_outputs())
    b = make_components(tmp_path, uplink_extra=TT + PREC, extra=_outputs(level=2))
    assert policy_changes(a, b) == [
        "T1: precision None -> 1",
        "T2: policy raw -> stats, window_s 60.0 -> 10.0",
    ]
    assert output_changes(a.cfg, b.cfg) == ["outputs.beacon: changed"]
    c = make_components(tmp_path)
    assert output_changes(a.cfg, c.cfg) == ["outputs.beacon: removed", "outputs.siren: removed"]


def test_a_replacement_keeps_unchanged_writers_and_builds_changed_ones(tmp_path: Path) -> None:
    a = make_components(tmp_path, extra=_outputs())
    b = make_components(tmp_path, extra=_outputs(level=2))  # only `when` changed
    c = make_components(tmp_path, extra=_outputs(address=6))  # beacon moved

    async def main() -> None:
        out = OutputSet(states=AlarmStates(), report=lambda kind, result: None)
        await out.open(a.outputs)
        first = out.outputs.writers
        assert await out.replace(b.outputs) == ([], [])  # same writers, new policies
        assert out.outputs.writers == first
        assert out.outputs.policies[0].when.min_level == 2
        built, dropped = await out.replace(c.outputs)
        assert (built, dropped) == (["beacon"], ["beacon"])
        assert out.outputs.writers[1] is first[1] and out.outputs.writers[0] is not first[0]
        await out.aclose()

    asyncio.run(main())
