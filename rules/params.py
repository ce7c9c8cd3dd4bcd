"""Rule tables → merged parameters per tag, with every config problem reported at once.

Contract (design/RULES.md, "Rule parameters" and "Replay command"):

- A ``[[rules]]`` table selects tags by exactly one of ``tags = [...]`` (names that must exist) or
  ``match = "GLOB"`` (``fnmatch`` style, case-sensitive, must match at least one tag).
- A table may name a shipped ``template`` (``rules/templates/<name>.toml``); the table's own keys
  override the template's.
- Tables are merged per tag in file order: where two tables set the same key, the later wins.
  A tag matched by no table has no checks at all (not even ``fault``).
- Cross-key checks run on the *merged* parameters of each tag. An issue's ``path`` names the
  table (``rules[i].key``) that set the offending key; its message names the tag.

:func:`resolve_rules` is what the engine uses: it returns the merged parameters or raises
:class:`RuleConfigError` carrying every :class:`RuleIssue`. No I/O besides reading the shipped
template files (package data).
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import cache
from importlib import resources
from typing import NamedTuple

import msgspec

from rules.config import RuleConfig

__all__ = [
    "MAX_SECONDS",
    "PARAM_KEYS",
    "Ceilings",
    "ParamValue",
    "RuleConfigError",
    "RuleIssue",
    "RuleTemplate",
    "TagParams",
    "check_rules",
    "load_templates",
    "number",
    "resolve_rules",
]

ParamValue = float | bool | tuple[float, float]

_SELECTORS = ("tags", "match", "template")
PARAM_KEYS: tuple[str, ...] = tuple(k for k in RuleConfig.__struct_fields__ if k not in _SELECTORS)
"""Every rule parameter key of RULES.md, in RuleConfig order."""

# Keys the engine implements. A key outside this set is reported as "not supported yet" so that
# a configured check is never silently ignored.
_SUPPORTED = frozenset(PARAM_KEYS)

_NON_NEG = frozenset(
    {
        "deadband",
        "high_deadband",
        "high_high_deadband",
        "low_deadband",
        "low_low_deadband",
        "on_delay_s",
        "off_delay_s",
        "stuck_band",
    }
)
_POS = frozenset(
    {"roc_limit_per_min", "roc_window_s", "trend_window_s", "trend_horizon_s", "stuck_s"}
)


MAX_SECONDS = 604800.0
"""Longest duration a rule key (``*_s``) accepts: one week. Longer never fires in practice and
overflows nothing only by luck (the kernels work in milliseconds)."""


class RuleIssue(NamedTuple):
    """One config problem: where (``rules[0].high``), what, and how to fix it."""

    path: str
    message: str
    hint: str


class RuleConfigError(Exception):
    """The rule tables are invalid; ``issues`` lists every problem (needs a human to fix)."""

    def __init__(self, issues: Sequence[RuleIssue]) -> None:
        self.issues = list(issues)
        lines = [f"{i.path}: {i.message} ({i.hint})" for i in self.issues]
        super().__init__(f"{len(self.issues)} rule config issue(s):\n  " + "\n  ".join(lines))


class Ceilings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Regulatory bounds on a template's set points, with the text they come from.

    ``*_max``: a configured limit may be stricter (lower) but never higher; ``*_min``: never
    lower (oxygen deficiency). Checked by ``safeedge check-config`` and ``safeedge commission``.
    """

    source: str
    high_max: float | None = None
    high_high_max: float | None = None
    low_min: float | None = None
    low_low_min: float | None = None


class RuleTemplate(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A shipped rule template: ``rule`` holds parameter keys only (no tags/match/template).

    ``units``: spellings of ``unit`` that a tag may carry (compared without case and spaces);
    ``plausible``: the span a healthy reading lies in (commissioning warns outside it);
    ``molar_mass_g_mol``: for the ppm / mg/m³ conversion hint of a gas template.
    """

    name: str
    description: str
    source: str
    unit: str
    rule: RuleConfig
    units: tuple[str, ...] = ()
    plausible: tuple[float, float] | None = None
    molar_mass_g_mol: float | None = None
    ceilings: Ceilings | None = None


@cache
def load_templates() -> dict[str, RuleTemplate]:
    """Every shipped template by name (the file stem); a broken file raises ``ValueError``."""
    out: dict[str, RuleTemplate] = {}
    folder = resources.files("rules") / "templates"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".toml"):
            continue
        stem = entry.name.removesuffix(".toml")
        try:
            tpl = msgspec.convert(tomllib.loads(entry.read_text("utf-8")), RuleTemplate)
        except (tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
            raise ValueError(f"rule template {entry.name}: {exc}") from exc
        if tpl.name != stem:
            raise ValueError(f"rule template {entry.name}: name {tpl.name!r} must be {stem!r}")
        if any(getattr(tpl.rule, k) is not None for k in _SELECTORS):
            raise ValueError(f"rule template {entry.name}: [rule] must not set {_SELECTORS}")
        out[stem] = tpl
    return out


@dataclass(frozen=True, slots=True)
class TagParams:
    """Merged parameters of one tag: only keys that some table (or template) set.

    ``sources[key]`` is the path of the table that set it (``rules[2]``), with
    `` template 'name'`` appended when the value came from that table's template.
    """

    values: dict[str, ParamValue]
    sources: dict[str, str]


def _table_values(rule: RuleConfig) -> dict[str, ParamValue]:
    out: dict[str, ParamValue] = {}
    for key in PARAM_KEYS:
        val = getattr(rule, key)
        if val is not None:
            out[key] = tuple(val) if key == "range" else val
    return out


def _check_table_values(path: str, vals: dict[str, ParamValue], out: list[RuleIssue]) -> None:
    """Single-key checks (msgspec enforces them on decode, not on direct construction)."""
    for key, val in vals.items():
        where = f"{path}.{key}"
        if key not in _SUPPORTED:
            out.append(RuleIssue(where, f"{key} is not supported yet", "remove the key"))
        elif isinstance(val, tuple):
            lo, hi = val
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                out.append(RuleIssue(where, f"range {list(val)} needs min < max", "fix range"))
        elif isinstance(val, bool):
            continue
        elif not math.isfinite(val):
            out.append(RuleIssue(where, f"{key} = {val} is not a finite number", "use a number"))
        elif key in _NON_NEG and val < 0:
            out.append(RuleIssue(where, f"{key} = {val} must be >= 0", "use 0 or more"))
        elif key in _POS and val <= 0:
            out.append(RuleIssue(where, f"{key} = {val} must be > 0", "use a positive number"))
        elif key.endswith("_s") and val > MAX_SECONDS:
            msg = f"must be a finite number in [0, {MAX_SECONDS:.15g}], got {val:.15g}"
            out.append(RuleIssue(where, msg, "durations longer than a week are no alarm delay"))
        elif key == "trend_min_points" and (int(val) != val or val < 3):
            out.append(RuleIssue(where, f"{key} = {val} must be an integer >= 3", "use 3 or more"))


def number(values: dict[str, ParamValue], key: str) -> float | None:
    """The numeric value of ``key`` (None when not set or not a number)."""
    val = values.get(key)
    if isinstance(val, bool | tuple) or val is None:
        return None
    return float(val)


def _select(
    i: int, rule: RuleConfig, index: dict[str, list[int]], names: Sequence[str]
) -> tuple[list[int], list[RuleIssue]]:
    path = f"rules[{i}]"
    if (rule.tags is None) == (rule.match is None):
        both = rule.tags is not None
        msg = "sets both tags and match" if both else "selects no tag"
        return [], [RuleIssue(path, msg, 'set exactly one of tags = [...] or match = "GLOB"')]
    issues: list[RuleIssue] = []
    selected: list[int] = []
    if rule.tags is not None:
        if not rule.tags:
            issues.append(RuleIssue(f"{path}.tags", "tags is empty", "name at least one tag"))
        for j, name in enumerate(rule.tags):
            if name not in index:
                issues.append(
                    RuleIssue(f"{path}.tags[{j}]", f"unknown tag {name!r}", "use a configured tag")
                )
            else:
                selected.extend(index[name])
    elif rule.match is not None:
        selected = [k for k, n in enumerate(names) if fnmatchcase(n, rule.match)]
        if not selected:
            issues.append(
                RuleIssue(f"{path}.match", f"{rule.match!r} matches no tag", "fix the glob")
            )
    return selected, issues


def _cross_checks(name: str, tp: TagParams, out: list[RuleIssue]) -> None:
    v, src = tp.values, tp.sources

    def issue(key: str, message: str, hint: str) -> None:
        out.append(RuleIssue(f"{src[key].split(' ')[0]}.{key}", f"tag {name!r}: {message}", hint))

    def num(key: str) -> float | None:
        return number(v, key)

    h, hh, lo, ll = num("high"), num("high_high"), num("low"), num("low_low")
    if h is not None and hh is not None and h > hh:
        issue(
            "high", f"high {h} > high_high {hh} (from {src['high_high']})", "need high <= high_high"
        )
    if lo is not None and ll is not None and ll > lo:
        issue("low_low", f"low_low {ll} > low {lo} (from {src['low']})", "need low_low <= low")
    # RULES.md asks low < high; a safety engineer expects the same of whichever limits are set.
    top_key = "high" if h is not None else "high_high"
    bot_key = "low" if lo is not None else "low_low"
    top, bot = num(top_key), num(bot_key)
    if top is not None and bot is not None and not bot < top:
        issue(
            bot_key, f"{bot_key} {bot} >= {top_key} {top} (from {src[top_key]})", "need low < high"
        )
    if "roc_window_s" in v and "roc_limit_per_min" not in v:
        issue("roc_window_s", "roc_window_s without roc_limit_per_min", "set roc_limit_per_min")
    has_w, has_h = "trend_window_s" in v, "trend_horizon_s" in v
    if has_w != has_h:
        key = "trend_window_s" if has_w else "trend_horizon_s"
        issue(key, "trend needs both trend_window_s and trend_horizon_s", "set both or neither")
    if "trend_min_points" in v and not (has_w and has_h):
        issue("trend_min_points", "trend_min_points without a trend check", "set the trend keys")
    if has_w and has_h and top is None and bot is None:
        issue("trend_window_s", "trend check without any high/low limit", "set a limit")
    if "stuck_band" in v and "stuck_s" not in v:
        issue("stuck_band", "stuck_band without stuck_s", "set stuck_s")


def _resolve(
    rules: Sequence[RuleConfig], tag_names: Sequence[str]
) -> tuple[list[TagParams | None], list[RuleIssue]]:
    issues: list[RuleIssue] = []
    index: dict[str, list[int]] = {}
    for k, name in enumerate(tag_names):
        index.setdefault(name, []).append(k)
    templates = load_templates()
    values: list[dict[str, ParamValue] | None] = [None] * len(tag_names)
    sources: list[dict[str, str]] = [{} for _ in tag_names]
    for i, rule in enumerate(rules):
        path = f"rules[{i}]"
        layers: list[tuple[dict[str, ParamValue], str]] = []
        if rule.template is not None:
            tpl = templates.get(rule.template)
            if tpl is None:
                known = ", ".join(sorted(templates))
                issues.append(
                    RuleIssue(
                        f"{path}.template",
                        f"unknown template {rule.template!r}",
                        f"one of: {known}",
                    )
                )
            else:
                layers.append((_table_values(tpl.rule), f"{path} template {rule.template!r}"))
        own = _table_values(rule)
        _check_table_values(path, own, issues)
        layers.append((own, path))
        selected, sel_issues = _select(i, rule, index, tag_names)
        issues.extend(sel_issues)
        for k in selected:
            merged = values[k]
            if merged is None:
                merged = {}
                values[k] = merged
            for vals, src in layers:
                merged.update(vals)
                sources[k].update(dict.fromkeys(vals, src))
    out: list[TagParams | None] = []
    for k, tag_vals in enumerate(values):
        tp = None if tag_vals is None else TagParams(values=tag_vals, sources=sources[k])
        if tp is not None:
            _cross_checks(tag_names[k], tp, issues)
        out.append(tp)
    return out, issues


def check_rules(rules: Sequence[RuleConfig], tag_names: Sequence[str]) -> list[RuleIssue]:
    """Every problem of the rule tables at once (empty when the config is good)."""
    return _resolve(rules, tag_names)[1]


def resolve_rules(rules: Sequence[RuleConfig], tag_names: Sequence[str]) -> list[TagParams | None]:
    """Merged parameters per tag index (None: no table matched the tag, so it has no checks).

    Raises :class:`RuleConfigError` with every issue when :func:`check_rules` finds any.
    """
    params, issues = _resolve(rules, tag_names)
    if issues:
        raise RuleConfigError(issues)
    return params
