"""check_rules / RuleEngine config errors: every problem at once, each with its path and tag."""

from __future__ import annotations

import math

import msgspec
import pytest

from rules import RuleConfigError, RuleEngine, RuleIssue, check_rules, load_templates
from rules.config import RuleConfig
from rules.params import PARAM_KEYS

TAGS = ["GT-1", "GT-2", "O2-1"]


def paths(issues: list[RuleIssue]) -> list[str]:
    return [i.path for i in issues]


def test_a_good_config_has_no_issues() -> None:
    rules = [
        RuleConfig(match="GT-*", high=25.0, high_high=50.0, deadband=1.0),
        RuleConfig(tags=("O2-1",), low=19.5, high=23.5, on_delay_s=2.0),
    ]
    assert check_rules(rules, TAGS) == []


def test_every_selection_problem_is_reported_at_once() -> None:
    rules = [
        RuleConfig(high=1.0),
        RuleConfig(tags=("GT-1",), match="GT-*", high=1.0),
        RuleConfig(tags=("GT-1", "NOPE"), high=1.0),
        RuleConfig(match="CH4-*", high=1.0),
        RuleConfig(tags=("GT-1",), template="no-such-template"),
        RuleConfig(tags=(), high=1.0),
    ]
    issues = check_rules(rules, TAGS)
    assert paths(issues) == [
        "rules[0]",
        "rules[1]",
        "rules[2].tags[1]",
        "rules[3].match",
        "rules[4].template",
        "rules[5].tags",
    ]
    assert "NOPE" in issues[2].message
    assert "combustible-gas-lel" in issues[4].hint


def test_cross_key_checks_run_on_the_merged_parameters_and_name_the_tag_and_table() -> None:
    rules = [
        RuleConfig(match="GT-*", high=25.0, high_high=50.0),
        RuleConfig(tags=("GT-2",), high_high=20.0),  # now high 25 > high_high 20 for GT-2 only
    ]
    issues = check_rules(rules, TAGS)
    assert len(issues) == 1
    assert issues[0].path == "rules[0].high"
    assert "'GT-2'" in issues[0].message
    assert "rules[1]" in issues[0].message


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"low": 5.0, "low_low": 6.0}, "rules[0].low_low"),
        ({"low": 5.0, "high": 5.0}, "rules[0].low"),
        ({"low_low": 9.0, "high_high": 3.0}, "rules[0].low_low"),
        ({"range": (5.0, 5.0)}, "rules[0].range"),
        ({"deadband": -1.0}, "rules[0].deadband"),
        ({"high": math.nan}, "rules[0].high"),
        ({"high": math.inf}, "rules[0].high"),
        ({"on_delay_s": -0.1}, "rules[0].on_delay_s"),
        ({"roc_limit_per_min": 0.0}, "rules[0].roc_limit_per_min"),
        ({"roc_window_s": 10.0}, "rules[0].roc_window_s"),
        ({"high": 1.0, "trend_window_s": 10.0}, "rules[0].trend_window_s"),
        ({"high": 1.0, "trend_horizon_s": 10.0}, "rules[0].trend_horizon_s"),
        ({"trend_window_s": 10.0, "trend_horizon_s": 10.0}, "rules[0].trend_window_s"),
        ({"high": 1.0, "trend_min_points": 4}, "rules[0].trend_min_points"),
        ({"trend_min_points": 2}, "rules[0].trend_min_points"),
        ({"stuck_s": 0.0}, "rules[0].stuck_s"),
        ({"stuck_band": 1.0}, "rules[0].stuck_band"),
    ],
)
def test_a_broken_parameter_is_an_issue_at_its_key(params: dict[str, object], path: str) -> None:
    issues = check_rules([RuleConfig(tags=("GT-1",), **params)], TAGS)  # type: ignore[arg-type]
    assert path in paths(issues)


def test_the_engine_refuses_a_bad_config_with_every_issue() -> None:
    rules = [RuleConfig(tags=("X",), high=1.0), RuleConfig(tags=("GT-1",), high=2.0, high_high=1.0)]
    with pytest.raises(RuleConfigError) as info:
        RuleEngine(TAGS, rules)
    assert paths(info.value.issues) == ["rules[0].tags[0]", "rules[1].high"]
    assert "rules[1].high" in str(info.value)


def test_later_tables_win_per_key_and_templates_are_overridden_by_their_table() -> None:
    rules = [
        RuleConfig(match="GT-*", template="combustible-gas-lel", deadband=2.0),
        RuleConfig(tags=("GT-2",), high=20.0),
    ]
    engine = RuleEngine(TAGS, rules)
    tpl = load_templates()["combustible-gas-lel"].rule
    from_tpl = {k: getattr(tpl, k) for k in PARAM_KEYS if getattr(tpl, k) is not None}
    assert from_tpl["high"] == 25.0
    assert engine.params(0) == {**from_tpl, "deadband": 2.0}
    assert engine.params(1)["high"] == 20.0
    assert engine.params(2) == {}


def test_every_rule_key_of_the_config_is_supported_by_the_engine() -> None:
    # the "not supported yet" path exists for keys added to RuleConfig before the engine
    assert set(PARAM_KEYS) == set(RuleConfig.__struct_fields__) - {"tags", "match", "template"}
    every = msgspec.convert(
        {
            "tags": ["GT-1"],
            "high": 1.0,
            "high_high": 2.0,
            "low": 0.0,
            "low_low": -1.0,
            "deadband": 0.1,
            "high_deadband": 0.1,
            "high_high_deadband": 0.1,
            "low_deadband": 0.1,
            "low_low_deadband": 0.1,
            "on_delay_s": 1.0,
            "off_delay_s": 1.0,
            "latch": True,
            "range": [-5.0, 5.0],
            "roc_limit_per_min": 1.0,
            "roc_window_s": 10.0,
            "trend_window_s": 10.0,
            "trend_horizon_s": 10.0,
            "trend_min_points": 3,
            "stuck_s": 10.0,
            "stuck_band": 0.1,
        },
        RuleConfig,
    )
    assert {k for k in PARAM_KEYS if getattr(every, k) is None} == set()
    assert check_rules([every], TAGS) == []
