"""Data-governance config: classification, what each class sends, precision, standard codes.

::

    [gateway]
    codes = { enterprise = "91320500MA1XXXXXX", hazard_source = "320500-0001" }

    [uplink.policy]             # class -> raw | stats | local_only
    public = "raw"
    internal = "raw"
    confidential = "stats"
    stats_window_s = 60         # default window of a "stats" tag

    [[uplink.tags]]             # selects by tags = [...] or match = "GLOB", like [[rules]]
    match = "TT-*"
    class = "internal"          # public | internal | confidential (default internal)
    policy = "stats"            # overrides the class's policy for these tags
    window_s = 300
    precision = 1               # decimals, applied before encoding
    codes = { equipment = "T-101", target = "TEMP", bit_no = "TT-101" }

Later ``[[uplink.tags]]`` tables override the keys they set for the tags they select.

Resolution (:func:`resolve_policies`): a tag's ``class`` is ``internal`` unless a table sets
it; its policy is a table's ``policy`` if one set it, else ``[uplink.policy]``'s entry for its
class; ``window_s`` defaults to ``stats_window_s``; codes are the gateway's overridden by the
tag's. Invariant checked by :func:`governance_issues` (called by :mod:`agent.config.checks`): a
tag selected by a ``[[rules]]`` table is never ``local_only`` (its alarms must leave the site),
every window is whole milliseconds dividing a day (windows align to the wall clock), every code
is printable text without spaces. No I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Annotated, Final, Literal

import msgspec

from agent.config.issues import ConfigIssue

if TYPE_CHECKING:
    from agent.config.schema import AgentConfig

__all__ = [
    "CLASSES",
    "POLICIES",
    "CodesConfig",
    "DataClass",
    "Policy",
    "PolicyConfig",
    "TagGovernanceConfig",
    "TagPolicy",
    "codes_dict",
    "governance_issues",
    "resolve_policies",
]

_CODE_RE: Final = re.compile(r"[^\s\x00-\x1f\x7f]{1,64}")
_DAY_MS: Final = 86_400_000

DataClass = Literal["public", "internal", "confidential"]
Policy = Literal["raw", "stats", "local_only"]
CLASSES: tuple[DataClass, ...] = ("public", "internal", "confidential")
POLICIES: tuple[Policy, ...] = ("raw", "stats", "local_only")


class CodesConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Standard codes mapping records onto the regulators' tables (docs/uplink.md):
    企业编码 ``enterprise``, 重大危险源编码 ``hazard_source``, 设备编码 ``equipment``,
    指标编码 ``target``, 位号 ``bit_no``. Per gateway and per tag; a tag's code overrides the
    gateway's."""

    enterprise: str | None = None
    hazard_source: str | None = None
    equipment: str | None = None
    target: str | None = None
    bit_no: str | None = None


class PolicyConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    public: Policy = "raw"
    internal: Policy = "raw"
    confidential: Policy = "stats"
    stats_window_s: float = 60.0


class TagGovernanceConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    tags: tuple[str, ...] | None = None
    match: str | None = None
    data_class: DataClass | None = msgspec.field(default=None, name="class")
    policy: Policy | None = None
    window_s: float | None = None
    precision: Annotated[int, msgspec.Meta(ge=0, le=9)] | None = None
    codes: CodesConfig | None = None


@dataclass(frozen=True, slots=True)
class TagPolicy:
    """What leaves the site for one tag."""

    data_class: DataClass
    policy: Policy
    window_ms: int  # the statistics window (meaningful when policy == "stats")
    precision: int | None  # decimals; None: values are sent as read
    codes: dict[str, str]  # the tag's effective codes (gateway's, overridden by the tag's)


def codes_dict(codes: CodesConfig | None) -> dict[str, str]:
    if codes is None:
        return {}
    return {k: v for k in CodesConfig.__struct_fields__ if (v := getattr(codes, k)) is not None}


def _selected(t: TagGovernanceConfig, names: Sequence[str]) -> list[int]:
    if t.tags is not None:
        wanted = set(t.tags)
        return [i for i, n in enumerate(names) if n in wanted]
    if t.match is not None:
        return [i for i, n in enumerate(names) if fnmatchcase(n, t.match)]
    return []


def _tag_names(cfg: AgentConfig) -> list[str]:
    return list(dict.fromkeys(t.name for d in cfg.devices for t in d.tags))


def resolve_policies(cfg: AgentConfig, names: Sequence[str]) -> list[TagPolicy]:
    """One :class:`TagPolicy` per name, in order (the config is assumed checked)."""
    pol = cfg.uplink.policy
    gw_codes = codes_dict(cfg.gateway.codes)
    cls: list[DataClass] = ["internal"] * len(names)
    explicit: list[Policy | None] = [None] * len(names)
    window = [pol.stats_window_s] * len(names)
    precision: list[int | None] = [None] * len(names)
    codes = [dict(gw_codes) for _ in names]
    for t in cfg.uplink.tags:
        for i in _selected(t, names):
            if t.data_class is not None:
                cls[i] = t.data_class
            if t.policy is not None:
                explicit[i] = t.policy
            if t.window_s is not None:
                window[i] = t.window_s
            if t.precision is not None:
                precision[i] = t.precision
            codes[i].update(codes_dict(t.codes))
    class_policy: dict[DataClass, Policy] = {
        "public": pol.public,
        "internal": pol.internal,
        "confidential": pol.confidential,
    }
    return [
        TagPolicy(
            data_class=cls[i],
            policy=explicit[i] or class_policy[cls[i]],
            window_ms=round(window[i] * 1000),
            precision=precision[i],
            codes=codes[i],
        )
        for i in range(len(names))
    ]


def _rule_tags(cfg: AgentConfig, names: Sequence[str]) -> set[int]:
    out: set[int] = set()
    for r in cfg.rules:
        if r.tags is not None:
            out.update(i for i, n in enumerate(names) if n in set(r.tags))
        elif r.match is not None:
            out.update(i for i, n in enumerate(names) if fnmatchcase(n, r.match))
    return out


def _window_issues(path: str, window_s: float) -> list[ConfigIssue]:
    ms = window_s * 1000
    ok = math.isfinite(ms) and 1000 <= ms <= _DAY_MS and ms == round(ms)
    if ok and _DAY_MS % round(ms) == 0:
        return []
    msg = f"statistics window {window_s:g} s must be 1 s .. 1 day and divide a day"
    return [ConfigIssue(path, msg, "use e.g. 60, 300, 900 or 3600 (windows align to the clock)")]


def _codes_issues(path: str, codes: CodesConfig | None) -> list[ConfigIssue]:
    out = []
    for key, value in codes_dict(codes).items():
        if not _CODE_RE.fullmatch(value):
            msg = f"code {value!r} must be 1 to 64 printable characters without spaces"
            out.append(ConfigIssue(f"{path}.{key}", msg, "copy the code from the register"))
    return out


def governance_issues(cfg: AgentConfig) -> list[ConfigIssue]:
    """Problems of ``[gateway].codes``, ``[uplink.policy]`` and ``[[uplink.tags]]``."""
    names = _tag_names(cfg)
    issues = _codes_issues("gateway.codes", cfg.gateway.codes)
    issues += _window_issues("uplink.policy.stats_window_s", cfg.uplink.policy.stats_window_s)
    for k, t in enumerate(cfg.uplink.tags):
        path = f"uplink.tags[{k}]"
        if (t.tags is None) == (t.match is None):
            msg = "sets both tags and match" if t.tags is not None else "selects no tag"
            issues.append(
                ConfigIssue(path, msg, 'set exactly one of tags = [...] or match = "GLOB"')
            )
            continue
        for j, name in enumerate(t.tags or ()):
            if name not in names:
                issues.append(
                    ConfigIssue(
                        f"{path}.tags[{j}]", f"unknown tag {name!r}", "use a configured tag"
                    )
                )
        if t.match is not None and not _selected(t, names):
            issues.append(
                ConfigIssue(f"{path}.match", f"{t.match!r} matches no tag", "fix the glob")
            )
        if t.window_s is not None:
            issues += _window_issues(f"{path}.window_s", t.window_s)
        issues += _codes_issues(f"{path}.codes", t.codes)
    if issues:
        return issues
    ruled = _rule_tags(cfg, names)
    for i, p in enumerate(resolve_policies(cfg, names)):
        if p.policy == "local_only" and i in ruled:
            msg = (
                f"tag {names[i]!r} has alarm rules but its policy is local_only "
                f"(class {p.data_class}): its alarms must always reach the platform"
            )
            hint = 'give the tag policy = "stats" or "raw", or another class'
            where = _source(cfg, names[i]) or f"uplink.policy.{p.data_class}"
            issues.append(ConfigIssue(where, msg, hint))
    return issues


def _source(cfg: AgentConfig, name: str) -> str | None:
    """The key path that made ``name`` local_only: the last table setting its policy/class."""
    where = None
    for k, t in enumerate(cfg.uplink.tags):
        if _selected(t, [name]):
            if t.policy is not None:
                where = f"uplink.tags[{k}].policy"
            elif t.data_class is not None and where is None:
                where = f"uplink.tags[{k}].class"
    return where
