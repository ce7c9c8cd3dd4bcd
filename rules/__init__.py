"""Alarm rules: numba kernels over sample arrays and the engine that turns their state changes
into :class:`rules.events.AlarmEvent` lists. Semantics: design/RULES.md; notes: docs/rules.md.

Public API::

    check_rules(rules, tag_names) -> list[RuleIssue]     every config problem at once
    RuleEngine(tag_names, rules)                         raises RuleConfigError
        .warm_up() / .evaluate(tag, ts_ms, value, quality) / .acknowledge(tag, ts_ms, alarm)
        .params(tag)
"""

from rules.engine import RuleEngine
from rules.events import AlarmEvent, AlarmKind, Transition
from rules.params import RuleConfigError, RuleIssue, check_rules, load_templates

__all__ = [
    "AlarmEvent",
    "AlarmKind",
    "RuleConfigError",
    "RuleEngine",
    "RuleIssue",
    "Transition",
    "check_rules",
    "load_templates",
]
