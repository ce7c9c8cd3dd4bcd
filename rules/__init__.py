"""Alarm rules: numba kernels over sample arrays and the engine that turns their state changes
into :class:`rules.events.AlarmEvent` lists. Semantics: design/RULES.md; notes: docs/rules.md.

Public API::

    check_rules(rules, tag_names) -> list[RuleIssue]     every config problem at once
    RuleEngine(tag_names, rules)                         raises RuleConfigError
        .warm_up() / .evaluate(tag, ts_ms, value, quality) / .acknowledge(tag, ts_ms, alarm)
        .params(tag)

Importing this package does not import numba: :class:`RuleEngine` (and with it the kernels) is
loaded on first use, so a config check never imports numba and the agent can set
``NUMBA_CACHE_DIR`` from the config before the kernels' cache is located.
"""

from typing import TYPE_CHECKING, Any

from rules.events import AlarmEvent, AlarmKind, Transition
from rules.params import RuleConfigError, RuleIssue, check_rules, load_templates

if TYPE_CHECKING:
    from rules.engine import RuleEngine

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


def __getattr__(name: str) -> Any:
    if name == "RuleEngine":
        from rules.engine import RuleEngine

        return RuleEngine
    raise AttributeError(f"module 'rules' has no attribute {name!r}")
