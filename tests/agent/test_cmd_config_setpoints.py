"""``safeedge check-config``: set points and units against the templates (warnings, --strict)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli import main
from tests.agent.test_setpoints import config

UNSAFE = """
[[rules]]
match = "GT-*"
template = "combustible-gas-lel"
high = 30
[[rules]]
tags = ["H2S-1"]
template = "toxic-h2s"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_setpoint_above_the_ceiling_and_a_unit_mismatch_are_warnings_by_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, config(UNSAFE, h2s="ppm"))
    assert main(["check-config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{path}: ok: ") and out.rstrip().endswith("(2 warnings)")
    lines = err.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{path}: rules[0].high: warning: tag 'GT-101': high = 30 %LEL")
    assert "GB/T 50493-2019" in lines[0]
    assert lines[1].startswith(f'{path}: devices[0] "plc".tags[1] "H2S-1".unit: warning: ')
    assert "high = 7.17" in lines[1]


def test_strict_makes_them_errors_and_exits_78(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, config(UNSAFE, h2s="ppm"))
    assert main(["check-config", "--strict", str(path)]) == 78
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count(": error: ") == 2
    assert err.splitlines()[-1] == (
        f"safeedge: {path}: 2 set point problems (--strict), config not accepted"
    )


def test_a_config_within_the_ceilings_passes_strict_quietly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, config(UNSAFE.replace("high = 30", "high = 20")))
    assert main(["check-config", "--strict", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "warning" not in out
