"""Set points against the regulatory ceilings and units of the shipped rule templates.

A ``[[rules]]`` table that names a ``template`` may override its limits; this module says when
an override is looser than the regulation the template cites (``high = 30`` with
``combustible-gas-lel``, where GB/T 50493-2019 puts the level-1 alarm at ≤ 25 %LEL), and when a
tag's unit is not the template's (``toxic-h2s`` is in mg/m³; a tag in ppm needs other numbers).

The same findings feed ``safeedge check-config`` (warnings; errors with ``--strict``) and
``safeedge commission`` (a looser set point is a FAIL, a unit mismatch a WARN). No I/O besides
reading the shipped template files. The merged parameters are the rule engine's own
(:func:`rules.params.resolve_rules`), so a finding names the table that set the value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Literal

from agent.config import AgentConfig
from drivers.config import SerialLineTagConfig, TagConfig
from rules.params import RuleConfigError, RuleTemplate, load_templates, number, resolve_rules

__all__ = ["SetpointFinding", "normalize_unit", "setpoint_findings", "tag_templates"]

Severity = Literal["fail", "warn"]
_MOLAR_VOLUME_L = 24.45  # litres per mole at 25 °C and 101.325 kPa (the usual ppm basis)
_BOUNDS = (
    ("high", "high_max", "above"),
    ("high_high", "high_high_max", "above"),
    ("low", "low_min", "below"),
    ("low_low", "low_low_min", "below"),
)


@dataclass(frozen=True, slots=True)
class SetpointFinding:
    """One problem: ``fail`` (a limit looser than its regulation) or ``warn`` (unit mismatch).

    ``path`` is the config key that set the value (``rules[1].high``), or the tag's path.
    """

    severity: Severity
    path: str
    tag: str
    template: str
    message: str
    hint: str


def normalize_unit(unit: str) -> str:
    """Units compared without case, spaces, full-width percent, or ``m3`` for ``m³``."""
    return unit.replace("％", "%").replace(" ", "").lower().replace("m3", "m³")


def tag_templates(cfg: AgentConfig) -> dict[str, list[str]]:
    """Tag name → the templates applied to it, in rule-table order (selection as the engine's:
    ``tags`` names or an ``fnmatch`` glob, case-sensitive)."""
    names = [t.name for d in cfg.devices for t in d.tags]
    out: dict[str, list[str]] = {}
    for rule in cfg.rules:
        if rule.template is None:
            continue
        if rule.tags is not None:
            chosen = [n for n in rule.tags if n in names]
        else:
            glob = rule.match or ""
            chosen = [n for n in names if fnmatchcase(n, glob)]
        for name in chosen:
            if rule.template not in out.setdefault(name, []):
                out[name].append(rule.template)
    return out


def setpoint_findings(cfg: AgentConfig) -> list[SetpointFinding]:
    """Every set point looser than its template's ceilings, and every unit mismatch."""
    if not cfg.rules:
        return []
    templates = load_templates()
    tag_paths: dict[str, tuple[str, str]] = {}
    for i, device in enumerate(cfg.devices):
        tags: Sequence[TagConfig | SerialLineTagConfig] = device.tags
        for j, t in enumerate(tags):
            here = f'devices[{i}] "{device.name}".tags[{j}] "{t.name}"'
            tag_paths.setdefault(t.name, (here, t.unit))
    names = list(tag_paths)
    try:
        params = resolve_rules(cfg.rules, names)
    except RuleConfigError:
        return []  # check_config reports these; nothing here is meaningful until they are fixed
    by_name = dict(zip(names, params, strict=True))
    findings: list[SetpointFinding] = []
    for tag, applied in tag_templates(cfg).items():
        tp = by_name.get(tag)
        for name in applied:
            tpl = templates.get(name)
            if tpl is None or tp is None:
                continue
            if tpl.ceilings is not None:
                for key, bound_key, side in _BOUNDS:
                    bound = getattr(tpl.ceilings, bound_key)
                    value = number(tp.values, key)
                    if bound is None or value is None or not math.isfinite(value):
                        continue
                    looser = value > bound if side == "above" else value < bound
                    if looser:
                        where = f"{tp.sources[key].split(' ')[0]}.{key}"
                        word = "at most" if side == "above" else "at least"
                        limit = "ceiling" if side == "above" else "floor"
                        findings.append(
                            SetpointFinding(
                                "fail",
                                where,
                                tag,
                                name,
                                f"tag {tag!r}: {key} = {value:g} {tpl.unit} is {side} the "
                                f"regulatory {limit} {bound:g} {tpl.unit} of template {name!r}",
                                f"set {key} {word} {bound:g} ({tpl.ceilings.source})",
                            )
                        )
            findings += _unit_findings(tag, tag_paths[tag], name, tpl)
    return findings


def _unit_findings(
    tag: str, where: tuple[str, str], name: str, tpl: RuleTemplate
) -> Sequence[SetpointFinding]:
    path, unit = where
    accepted = {normalize_unit(u) for u in (tpl.unit, *tpl.units)}
    if normalize_unit(unit) in accepted:
        return []
    if not unit:
        msg = f"tag {tag!r} has no unit; template {name!r} is in {tpl.unit}"
        hint = f'set unit = "{tpl.unit}" on the tag if the device reads in {tpl.unit}'
        return [SetpointFinding("warn", f"{path}.unit", tag, name, msg, hint)]
    msg = f"tag {tag!r} is in {unit!r} but template {name!r} is in {tpl.unit}"
    hint = f"the template's limits are {tpl.unit} values: use a template in {unit}, or set "
    hint += "the limits yourself"
    pair = {normalize_unit(unit), normalize_unit(tpl.unit)}
    if tpl.molar_mass_g_mol and pair == {"ppm", "mg/m³"}:
        factor = tpl.molar_mass_g_mol / _MOLAR_VOLUME_L  # mg/m³ per ppm
        limits = [(k, v) for k in ("high", "high_high") if (v := getattr(tpl.rule, k)) is not None]
        if normalize_unit(unit) == "ppm":
            conv = ", ".join(f"{k} = {v / factor:.3g}" for k, v in limits)
        else:
            conv = ", ".join(f"{k} = {v * factor:.3g}" for k, v in limits)
        hint = (
            f"1 ppm = {factor:.3g} mg/m³ at 25 °C; in {unit} the template's limits are {conv}: "
            "set them in the rule table (or configure the device to report in "
            f"{tpl.unit})"
        )
    return [SetpointFinding("warn", f"{path}.unit", tag, name, msg, hint)]
