"""Set points against the templates' regulatory ceilings and units (agent/setpoints.py)."""

from __future__ import annotations

import textwrap

from agent.config import loads_config
from agent.setpoints import normalize_unit, setpoint_findings

BASE = """
[gateway]
site = "S1"
id = "G1"
[[devices]]
driver = "modbus_tcp"
name = "plc"
host = "127.0.0.1"
  [[devices.tags]]
  name = "GT-101"
  address = 0
  unit = "{lel}"
  [[devices.tags]]
  name = "H2S-1"
  address = 1
  unit = "{h2s}"
  [[devices.tags]]
  name = "O2-1"
  address = 2
  unit = "%vol"
"""


def config(rules: str, *, lel: str = "%LEL", h2s: str = "mg/m³") -> str:
    return BASE.format(lel=lel, h2s=h2s) + textwrap.dedent(rules)


def test_the_shipped_limits_pass() -> None:
    rules = """
    [[rules]]
    match = "GT-*"
    template = "combustible-gas-lel"
    [[rules]]
    tags = ["H2S-1"]
    template = "toxic-h2s"
    [[rules]]
    tags = ["O2-1"]
    template = "oxygen"
    high = 23.0
    """
    assert setpoint_findings(loads_config(config(rules))) == []


def test_a_level_one_alarm_above_25_lel_fails_naming_the_table_and_the_standard() -> None:
    rules = """
    [[rules]]
    match = "GT-*"
    template = "combustible-gas-lel"
    [[rules]]
    tags = ["GT-101"]
    high = 30
    """
    [f] = setpoint_findings(loads_config(config(rules)))
    assert (f.severity, f.path, f.tag) == ("fail", "rules[1].high", "GT-101")
    assert "25" in f.message and "GB/T 50493-2019" in f.hint


def test_an_oxygen_low_limit_below_19_5_fails() -> None:
    rules = """
    [[rules]]
    tags = ["O2-1"]
    template = "oxygen"
    low = 18.0
    """
    [f] = setpoint_findings(loads_config(config(rules)))
    assert (f.severity, f.path) == ("fail", "rules[0].low")


def test_a_mg_per_m3_template_on_a_ppm_tag_warns_with_the_converted_limits() -> None:
    rules = """
    [[rules]]
    tags = ["H2S-1"]
    template = "toxic-h2s"
    """
    [f] = setpoint_findings(loads_config(config(rules, h2s="ppm")))
    assert f.severity == "warn" and f.path.endswith('"H2S-1".unit')
    assert "high = 7.17" in f.hint  # 10 mg/m³ H2S at 25 °C


def test_units_compare_without_case_spaces_or_the_ascii_cube() -> None:
    assert normalize_unit("% LEL") == normalize_unit("%lel")
    assert normalize_unit("mg/m3") == normalize_unit("mg/m³")
    rules = """
    [[rules]]
    match = "GT-*"
    template = "combustible-gas-lel"
    """
    assert setpoint_findings(loads_config(config(rules, lel="% lel"))) == []
    [f] = setpoint_findings(loads_config(config(rules, lel="")))
    assert f.severity == "warn" and "no unit" in f.message
