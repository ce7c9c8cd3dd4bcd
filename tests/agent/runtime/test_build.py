"""Building components: complete, frozen, grouped by bus, and without I/O."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agent.runtime import Components
from tests.agent.runtime.conftest import config_text, make_components


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


_PROBE = """
import sys
from pathlib import Path
import agent.runtime.run  # the whole running agent
from agent.config import load_config, resolved_paths
from agent.runtime import build
path = Path(sys.argv[1])
cfg = load_config(path)
c = build(cfg, resolved_paths(cfg, path), password=None, clock_ms=lambda: 0)
print(c.incidents is not None, *(m in sys.modules for m in sys.argv[2:]))
"""


@pytest.mark.parametrize("recorder", [False, True])
def test_the_recorder_and_the_metrics_endpoint_are_loaded_only_when_configured(
    tmp_path: Path, recorder: bool
) -> None:
    extra = "" if recorder else "\n[review.recorder]\nenabled = false\n"
    path = tmp_path / "agent.toml"
    path.write_text(config_text(tmp_path / "data", extra=extra))
    lazy = ["agent.review.recorder", "prometheus_client"]
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(path), *lazy],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert done.stdout.split() == [str(recorder), str(recorder), "False"]
