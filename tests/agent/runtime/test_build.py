"""Building components: complete, frozen, grouped by bus, and without I/O."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from agent.runtime import Components
from tests.agent.runtime.conftest import make_components


def test_build_touches_no_file_and_groups_devices_by_bus(tmp_path: Path) -> None:
    c = make_components(tmp_path)
    assert not (tmp_path / "data").exists()  # no store, no key file, no replay file yet
    assert [len(bus) for bus in c.buses.values()] == [1, 1]
    assert [d.name for d in c.devices] == ["plc-a", "plc-b"]
    assert c.tags.names == ("T1", "T2", "L-3")
    assert c.uplink is None and c.shaper.rbe is None


def test_components_are_frozen(components: Components) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        components.uplink = None  # type: ignore[misc]


def test_report_by_exception_gets_per_tag_deadbands(tmp_path: Path) -> None:
    rbe = '\n[uplink.report_by_exception]\ndeadband = 0.5\ndeadbands = { "T2" = 3.0 }\n'
    c = make_components(tmp_path, uplink_extra=rbe)
    rbe = c.shaper.rbe
    assert rbe is not None
    tag = np.array([0, 1, 2], dtype=np.int32)
    q = np.zeros(3, dtype=np.uint8)
    rbe.select(tag, np.zeros(3, dtype=np.int64), np.zeros(3), q)
    moved = rbe.select(tag, np.ones(3, dtype=np.int64), np.ones(3), q)
    assert moved.tolist() == [True, False, True]  # 1.0 > 0.5, 1.0 <= 3.0, 1.0 > 0.5


def test_an_enabled_uplink_is_built_but_not_started(tmp_path: Path) -> None:
    c = make_components(tmp_path, uplink=True)
    assert c.uplink is not None
    assert not c.uplink.connected
