"""``safeedge review tune``: replay one tag's recorded history through the rule engine with
candidate parameter sets, beside the current set. Evidence for a human; nothing is applied.

- Candidates are the cartesian product of ``--param key=v1,v2,...`` values, each overriding
  the tag's current merged parameters. A candidate beyond the regulatory bounds of the
  template the tag's rules use (its ``ceilings``: ``high_max``, ``high_high_max``,
  ``low_min``, ``low_low_min``) is refused, as is one the engine's config checks reject.
- The replay is exactly ``safeedge rules replay`` on the exported trace (``--export DIR``
  writes ``trace.csv`` and one ``rules-N.toml`` per set): samples in time order, an operator
  ``ack`` from the alarm stream after the samples of its millisecond.
- Cost: the **crossings** are the episodes where the valid samples are at/above the current
  ``high`` (level 1) / ``high_high`` (level 2) (at/below ``low`` / ``low_low``), episodes less
  than 60 s apart merged. Each is "alarmed" at the first time within it that the candidate's
  alarm is at that level or higher (0 delay when it already was); a crossing never alarmed
  within it is **missed**.
- Chattering: raises of one alarm kind of the tag that form 3 raises within 60 s (kpi.py).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from rules import RuleConfigError, RuleEngine, load_templates
from rules.config import RuleConfig
from rules.params import PARAM_KEYS, resolve_rules

__all__ = [
    "Candidate",
    "TuneResult",
    "beyond_ceiling",
    "candidate_grid",
    "parse_param",
    "template_ceiling",
    "tune",
    "write_trace",
]

MERGE_MS: Final = 60_000
_LEVEL_KEYS: Final = (
    ("high", 1, True),
    ("high_high", 2, True),
    ("low", 1, False),
    ("low_low", 2, False),
)


def parse_param(spec: str) -> tuple[str, list[float]]:
    """``deadband=0.5,1,2`` → ("deadband", [0.5, 1.0, 2.0]); ``ValueError`` names the problem."""
    key, sep, values = spec.partition("=")
    key = key.strip()
    if not sep or not values.strip():
        raise ValueError(f"--param {spec!r}: expected KEY=V1,V2,... (e.g. deadband=0.5,1,2)")
    if key not in PARAM_KEYS or key in ("latch", "range"):
        raise ValueError(
            f"--param {spec!r}: {key!r} is not a numeric rule key (see design/RULES.md)"
        )
    try:
        return key, [float(v) for v in values.split(",")]
    except ValueError as exc:
        raise ValueError(f"--param {spec!r}: every value must be a number") from exc


def candidate_grid(params: Sequence[tuple[str, list[float]]]) -> list[dict[str, float]]:
    keys = [k for k, _ in params]
    if len(set(keys)) != len(keys):
        raise ValueError("each --param key may be given once")
    return [
        dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(v for _, v in params))
    ]


@dataclass(frozen=True, slots=True)
class Candidate:
    label: str
    overrides: dict[str, float]
    values: dict[str, Any]  # the full merged parameters replayed
    refused: str | None
    events: list[dict[str, Any]]
    raised: int
    chattering: int
    delays: dict[str, list[int]]  # limit key → delay (ms) of each alarmed crossing
    missed: dict[str, int]

    def rules_toml(self, tag: str) -> str:
        lines = ["[[rules]]", f"tags = [{json.dumps(tag, ensure_ascii=False)}]"]
        for k, v in self.values.items():
            if isinstance(v, bool):
                lines.append(f"{k} = {'true' if v else 'false'}")
            elif isinstance(v, tuple):
                lines.append(f"{k} = [{_toml_float(v[0])}, {_toml_float(v[1])}]")
            else:
                lines.append(f"{k} = {_toml_float(float(v))}")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class TuneResult:
    tag: str
    samples: int
    acks: int
    crossings: dict[str, int]
    ceiling: dict[str, float]
    ceiling_source: str
    candidates: list[Candidate]  # [0] is the current set


def _toml_float(x: float) -> str:
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return repr(float(x))


def current_values(
    rules: Sequence[RuleConfig], tag: str, tag_names: Sequence[str]
) -> tuple[dict[str, Any], list[str]]:
    """The tag's merged parameters (the rule tables resolved over the config's ``tag_names``)
    and the templates its tables name."""
    names = list(tag_names) if tag in tag_names else [*tag_names, tag]
    merged = resolve_rules(rules, names)[names.index(tag)]
    if merged is None:
        raise ValueError(f"tag {tag!r} has no rules: nothing to tune")
    templates = [
        r.template
        for r in rules
        if r.template is not None
        and (
            (r.tags is not None and tag in r.tags)
            or (r.match is not None and fnmatchcase(tag, r.match))
        )
    ]
    return dict(merged.values), templates


_BOUNDS: Final = ("high_max", "high_high_max", "low_min", "low_low_min")


def template_ceiling(templates: Sequence[str]) -> tuple[dict[str, float], str]:
    """The strictest regulatory bounds over the templates the tag's rules use: their
    ``ceilings`` (rules/templates: ``high_max``, ``high_high_max``: a limit may not be higher;
    ``low_min``, ``low_low_min``: not lower), and where they come from. ({}, why) when none
    carries any."""
    out: dict[str, float] = {}
    shipped = load_templates()
    sources = []
    for name in templates:
        tpl = shipped.get(name)
        if tpl is None or tpl.ceilings is None:
            continue
        sources.append(f"template {name}: {tpl.ceilings.source}")
        for key in _BOUNDS:
            bound = getattr(tpl.ceilings, key)
            if bound is None:
                continue
            strict = min if key.endswith("_max") else max
            out[key] = strict(out.get(key, float(bound)), float(bound))
    if not templates:
        return out, "no template: no ceiling"
    return out, "; ".join(sources) if sources else "templates carry no ceiling"


def beyond_ceiling(values: Mapping[str, Any], ceiling: Mapping[str, float]) -> list[str]:
    """What in ``values`` breaks a bound of ``ceiling`` (``high_max`` = 25: high ≤ 25)."""
    out = []
    for bound, limit in ceiling.items():
        key, _, side = bound.rpartition("_")
        if key not in values:
            continue
        v = float(values[key])
        if (side == "max" and v > limit) or (side == "min" and v < limit):
            out.append(f"{key} {v:g} {'>' if side == 'max' else '<'} {bound} {limit:g}")
    return out


def _replay(
    tag: str,
    values: Mapping[str, Any],
    ts: NDArray[np.int64],
    value: NDArray[np.float64],
    quality: NDArray[np.uint8],
    acks: NDArray[np.int64],
) -> list[dict[str, Any]]:
    rule = RuleConfig(tags=(tag,), **values)
    engine = RuleEngine([tag], [rule])
    zeros = np.zeros(ts.shape[0], np.int32)
    q = (quality != 0).astype(np.uint8)
    out = []
    start = 0
    cuts = np.searchsorted(ts, acks, side="right").tolist()
    for cut, ack in zip([*cuts, ts.shape[0]], [*acks.tolist(), None], strict=True):
        if cut > start:
            out += engine.evaluate(zeros[start:cut], ts[start:cut], value[start:cut], q[start:cut])
            start = cut
        if ack is not None:
            out += engine.acknowledge(0, int(ack))
    return [
        {
            "ts_ms": e.ts_ms,
            "tag": tag,
            "alarm": e.alarm,
            "event": e.event,
            "level": e.level,
            "value": e.value,
            **e.extra,
        }
        for e in out
    ]


def _episodes(
    ts: NDArray[np.int64], hit: NDArray[np.bool_]
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    t = ts[hit]
    if not t.shape[0]:
        return t, t
    # consecutive hit samples separated by a non-hit valid sample split an episode; merge
    # episodes whose gap is < MERGE_MS
    idx = np.flatnonzero(hit)
    breaks = (
        np.flatnonzero((np.diff(idx) > 1) & (np.diff(t) >= MERGE_MS))
        if t.shape[0] > 1
        else np.zeros(0, np.int64)
    )
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [t.shape[0] - 1]])
    return t[starts], t[ends]


def _chatter(raise_ts: NDArray[np.int64]) -> int:
    if raise_ts.shape[0] < 3:
        return 0
    hit = raise_ts[2:] - raise_ts[:-2] <= 60_000
    marked = np.zeros(raise_ts.shape[0], bool)
    for j in range(3):
        marked[j : j + hit.shape[0]] |= hit
    return int(marked.sum())


def tune(
    *,
    tag: str,
    rules: Sequence[RuleConfig],
    ts: NDArray[np.int64],
    value: NDArray[np.float64],
    quality: NDArray[np.uint8],
    acks: NDArray[np.int64],
    grid: Sequence[Mapping[str, float]],
    ceiling: Mapping[str, float] | None = None,
    tag_names: Sequence[str] | None = None,
) -> TuneResult:
    """Replay the current set and every candidate of ``grid`` (arrays sorted by ts).
    ``ceiling`` (``high_max``, ``low_min``, ... as in the templates) replaces the templates'
    bounds when given; ``tag_names`` are
    the config's tags (the rule tables' globs must match some), default just ``tag``."""
    current, templates = current_values(rules, tag, tag_names or [tag])
    if ceiling is None:
        ceiling, source = template_ceiling(templates)
    else:
        ceiling, source = dict(ceiling), "given ceiling"
    valid = (quality == 0) & np.isfinite(value)
    vts, vv = ts[valid], value[valid]
    crossings = {}
    for key, _, above in _LEVEL_KEYS:
        if key in current:
            lim = float(current[key])
            crossings[key] = _episodes(vts, vv >= lim if above else vv <= lim)
    out = []
    for n, overrides in enumerate([{}, *grid]):
        values = {**current, **overrides}
        label = "current" if n == 0 else f"#{n}"
        refused = None
        over = beyond_ceiling(values, ceiling)
        if over and n:
            refused = "; ".join(over) + f" ({source})"
        events: list[dict[str, Any]] = []
        if refused is None:
            try:
                events = _replay(tag, values, ts, value, quality, acks)
            except RuleConfigError as exc:
                refused = "; ".join(f"{i.message}" for i in exc.issues)
        delays: dict[str, list[int]] = {}
        missed: dict[str, int] = {}
        raised = chatter = 0
        if refused is None:
            raised = sum(e["event"] == "raise" for e in events)
            for kind in {e["alarm"] for e in events}:
                chatter += _chatter(
                    np.array(
                        [
                            e["ts_ms"]
                            for e in events
                            if e["alarm"] == kind and e["event"] == "raise"
                        ],
                        np.int64,
                    )
                )
            for key, level, above in _LEVEL_KEYS:
                if key not in crossings:
                    continue
                starts, ends = crossings[key]
                alarm = "high" if above else "low"
                ev = [e for e in events if e["alarm"] == alarm and e["event"] != "ack"]
                ev_ts = np.array([e["ts_ms"] for e in ev], np.int64)
                ev_lv = np.array([e["level"] for e in ev], np.int64)
                at = np.searchsorted(ev_ts, starts, side="right") - 1
                lvl_at_start = np.where(
                    at >= 0, ev_lv[np.maximum(at, 0)] if ev_lv.shape[0] else 0, 0
                )
                up = ev_ts[ev_lv >= level]
                j = np.searchsorted(up, starts, side="left")
                first = np.where(
                    j < up.shape[0],
                    up[np.minimum(j, max(up.shape[0] - 1, 0))] if up.shape[0] else 0,
                    -1,
                )
                ok_first = (j < up.shape[0]) & (first <= ends)
                already = lvl_at_start >= level
                alarmed = already | ok_first
                d = np.where(already, 0, first - starts)
                delays[key] = [int(x) for x in d[alarmed].tolist()]
                missed[key] = int((~alarmed).sum())
        out.append(
            Candidate(
                label, dict(overrides), values, refused, events, raised, chatter, delays, missed
            )
        )
    return TuneResult(
        tag=tag,
        samples=int(ts.shape[0]),
        acks=int(acks.shape[0]),
        crossings={k: int(v[0].shape[0]) for k, v in crossings.items()},
        ceiling=ceiling,
        ceiling_source=source,
        candidates=out,
    )


def write_trace(
    path: Path,
    tag: str,
    ts: NDArray[np.int64],
    value: NDArray[np.float64],
    quality: NDArray[np.uint8],
    acks: NDArray[np.int64],
) -> None:
    """The replay trace (design/RULES.md): samples in time order, each ack after the samples
    of its millisecond: exactly the order :func:`tune` evaluates them in."""
    name = tag.replace('"', '""')
    cell = f'"{name}"' if any(c in tag for c in ',"\n\r') or tag != tag.strip() else tag
    lines = ["ts_ms,tag,value,quality"]
    cuts = np.searchsorted(ts, acks, side="right").tolist()
    start = 0
    for cut, ack in zip([*cuts, ts.shape[0]], [*acks.tolist(), None], strict=True):
        for t, v, q in zip(
            ts[start:cut].tolist(),
            value[start:cut].tolist(),
            quality[start:cut].tolist(),
            strict=True,
        ):
            if q == 0:
                lines.append(f"{t},{cell},{'nan' if math.isnan(v) else repr(v)},good")
            else:
                lines.append(f"{t},{cell},,bad")
        start = max(start, cut)
        if ack is not None:
            lines.append(f"{ack},{cell},,ack")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
