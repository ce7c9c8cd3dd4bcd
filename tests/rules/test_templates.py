"""The shipped rule templates: present, sourced, valid, and behaving as their source says."""

from __future__ import annotations

from rules import RuleEngine, check_rules, load_templates
from rules.config import RuleConfig
from tests.rules.harness import feed, short

EXPECTED = {
    "combustible-gas-lel": (25.0, 50.0),
    "toxic-h2s": (10.0, 20.0),
    "toxic-co": (20.0, 40.0),
    "toxic-nh3": (20.0, 40.0),
    "toxic-cl2": (1.0, 2.0),
    "coal-ch4-face": (1.0, 1.5),
    "coal-ch4-face-return": (1.0, 1.0),
    "coal-ch4-heading": (1.0, 1.5),
    "coal-ch4-heading-return": (1.0, 1.0),
    "coal-ch4-main-return": (0.75, None),
    "coal-co": (24.0, None),
}


def test_every_template_ships_with_its_limits_unit_and_source() -> None:
    templates = load_templates()
    assert set(templates) == {*EXPECTED, "oxygen"}
    for name, (high, high_high) in EXPECTED.items():
        tpl = templates[name]
        assert (tpl.rule.high, tpl.rule.high_high) == (high, high_high), name
        assert tpl.unit and tpl.description
    for tpl in templates.values():
        assert any(s in tpl.source for s in ("GB/T 50493-2019", "煤矿安全规程")), tpl.name
    assert (templates["oxygen"].rule.low, templates["oxygen"].rule.high) == (19.5, 23.5)


def test_every_template_passes_the_rule_checks_on_its_own() -> None:
    for name in load_templates():
        assert check_rules([RuleConfig(tags=("X",), template=name)], ["X"]) == [], name


def test_the_coal_face_template_cuts_power_at_one_and_a_half_and_restores_below_one() -> None:
    engine = RuleEngine(["CH4"], [RuleConfig(tags=("CH4",), template="coal-ch4-face")])
    ev = feed(engine, (0, 0.5), (1, 1.0), (2, 1.5), (3, 1.0), (4, 0.99))
    assert short(ev) == [
        (1, "high", "raise", 1),
        (2, "high", "escalate", 2),
        (4, "high", "clear", 0),
    ]


def test_the_return_airway_template_cuts_power_at_the_alarm_limit() -> None:
    engine = RuleEngine(["CH4"], [RuleConfig(tags=("CH4",), template="coal-ch4-face-return")])
    ev = feed(engine, (0, 0.5), (1, 1.0), (2, 0.99))
    assert short(ev) == [(1, "high", "raise", 2), (2, "high", "clear", 0)]


def test_every_template_carries_ceilings_units_and_a_plausible_span_with_their_source() -> None:
    for tpl in load_templates().values():
        assert tpl.ceilings is not None, tpl.name
        assert any(s in tpl.ceilings.source for s in ("GB/T 50493-2019", "煤矿安全规程"))
        assert tpl.unit in tpl.units, tpl.name
        assert tpl.plausible is not None and tpl.plausible[0] < tpl.plausible[1]
        # the shipped limits themselves respect the ceilings they cite
        for key in ("high", "high_high"):
            bound, value = getattr(tpl.ceilings, f"{key}_max"), getattr(tpl.rule, key)
            assert bound is None or value is None or value <= bound, (tpl.name, key)
        for key in ("low", "low_low"):
            bound, value = getattr(tpl.ceilings, f"{key}_min"), getattr(tpl.rule, key)
            assert bound is None or value is None or value >= bound, (tpl.name, key)
