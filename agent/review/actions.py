"""What each ``safeedge review`` action does (argument parsing lives in agent/review/cmd.py)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from agent.config import AgentConfig
from agent.review.cmd import period
from agent.review.history import EVENTS, History
from agent.review.text import Lang, SiteTime, duration, t
from agent.tags import TagTable

__all__ = ["alarms", "export", "incident", "incidents", "tune"]


def _lang(cfg: AgentConfig, args: argparse.Namespace) -> Lang:
    lang: Lang = args.lang or cfg.review.lang
    return lang


def _site(cfg: AgentConfig, args: argparse.Namespace) -> SiteTime:
    return SiteTime(args.tz or cfg.review.timezone)


def _write(path: Path, text: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # plaintext records
        with open(fd, "w", encoding="utf-8", newline="") as out:
            out.write(text)
    except OSError as exc:
        raise ValueError(f"{path}: cannot write: {exc}") from exc


def alarms(cfg: AgentConfig, args: argparse.Namespace) -> int:
    from agent.review.alarms import alarm_report_html, print_alarm_report
    from agent.review.kpi import alarm_kpis

    lang, site = _lang(cfg, args), _site(cfg, args)
    from_ms, to_ms = period(cfg, args, site)
    tags = TagTable(cfg)
    fleeting_s = args.fleeting_s if args.fleeting_s is not None else cfg.review.fleeting_s
    with History.for_config(cfg, args.config) as h:
        log = h.alarms(to_ms=to_ms)
        events = h.events(from_ms=from_ms, to_ms=to_ms)
    k = alarm_kpis(
        log,
        from_ms=from_ms,
        to_ms=to_ms,
        fleeting_ms=int(fleeting_s * 1000),
        device_of={tg.name: tg.device for tg in tags},
        events=events,
    )
    print_alarm_report(k, lang=lang, site=site, gateway=cfg.gateway.id)
    if args.html:
        _write(args.html, alarm_report_html(k, lang=lang, site=site, gateway=cfg.gateway.id))
        print(f"HTML report: {args.html}", file=sys.stderr)
    return 0


def incidents(cfg: AgentConfig, args: argparse.Namespace) -> int:
    from agent.review.incident import incidents_from
    from agent.review.render import print_table

    lang, site = _lang(cfg, args), _site(cfg, args)
    with History.for_config(cfg, args.config) as h:
        found = incidents_from(h.incident_records())
    rows = []
    for inc in found:
        tr = inc.trigger
        closed = (
            site.fmt(inc.closed_ms) + f" ({inc.reason})"
            if inc.closed_ms is not None
            else t("open", lang)
        )
        rows.append(
            [
                inc.id,
                site.fmt(inc.opened_ms),
                closed,
                f"{tr['tag']} {tr['alarm']} L{tr['level']}",
                ", ".join(inc.tags),
                len(inc.points),
            ]
        )
    print_table(
        t("incidents", lang),
        [
            "ID",
            t("opened", lang),
            t("closed", lang),
            t("trigger", lang),
            t("tags", lang),
            t("samples", lang),
        ],
        rows,
    )
    return 0


def incident(cfg: AgentConfig, args: argparse.Namespace) -> int:
    from agent.review.incident import incident_report, incidents_from
    from agent.review.incident_page import incident_csv, incident_html, incident_json
    from agent.review.render import print_table

    lang, site = _lang(cfg, args), _site(cfg, args)
    with History.for_config(cfg, args.config) as h:
        found = {i.id: i for i in incidents_from(h.incident_records())}
        inc = found.get(args.id)
        if inc is None:
            known = ", ".join(list(found)[-5:]) or "none recorded"
            raise ValueError(
                f"no incident {args.id!r} (latest: {known}; see 'safeedge review incidents')"
            )
        end = inc.closed_ms if inc.closed_ms is not None else None
        log = h.alarms(to_ms=None if end is None else end + 1)
        events = h.events(from_ms=inc.start_ms, to_ms=None if end is None else end + 1)
    report = incident_report(inc, alarms=log, device_events=events)
    print_table(
        f"{t('title_incident', lang)} {inc.id}",
        [
            t("time", lang),
            t("tag", lang),
            t("alarm", lang),
            t("event", lang),
            t("level", lang),
            t("who", lang),
        ],
        [
            [
                site.fmt(e["ts_ms"]),
                e["tag"],
                e["alarm"],
                e["event"],
                e["level"],
                e.get("user") or "",
            ]
            for e in report["timeline"]
        ],
    )
    for info in report["tags"]:
        beyond = ", ".join(f"{k} {duration(v)}" for k, v in info["beyond_ms"].items())
        print(
            f"{info['tag']}: {info['samples']} samples "
            f"({info['pre_trigger_samples']} before the trigger)"
            + (
                f", peak {info['peak']:g} {info['unit']} at {site.fmt(info['peak_ms'])}"
                if info["peak"] is not None
                else ""
            )
            + (f"; {beyond}" if beyond else "")
        )
    if args.html:
        _write(args.html, incident_html(inc, report, lang=lang, site=site, gateway=cfg.gateway.id))
    if args.csv:
        _write(args.csv, incident_csv(inc, site))
    if args.json:
        _write(args.json, incident_json(report))
    return 0


def tune(cfg: AgentConfig, args: argparse.Namespace) -> int:
    from agent.review.tune import candidate_grid, parse_param, write_trace
    from agent.review.tune import tune as run_tune

    lang, site = _lang(cfg, args), _site(cfg, args)
    grid = candidate_grid([parse_param(p) for p in args.param])
    names = TagTable(cfg).names
    if args.tag not in names:
        raise ValueError(f"--tag {args.tag!r} is not a tag of this config")
    from_ms, to_ms = period(cfg, args, site)
    with History.for_config(cfg, args.config) as h:
        pts = h.points(tags=[args.tag], from_ms=from_ms, to_ms=to_ms, with_incidents=True)
        log = h.alarms(to_ms=to_ms)
    ts, value, quality = pts.of(args.tag)
    acks = np.empty(0, np.int64)
    if args.tag in log.tags:
        sel = (
            (log.tag == log.tags.index(args.tag))
            & (log.event == EVENTS.index("ack"))
            & (log.ts_ms >= from_ms)
        )
        acks = np.unique(log.ts_ms[sel])
    result = run_tune(
        tag=args.tag,
        rules=cfg.rules,
        ts=ts,
        value=value,
        quality=quality,
        acks=acks,
        grid=grid,
        tag_names=names,
    )
    if args.export:
        args.export.mkdir(parents=True, exist_ok=True)
        write_trace(args.export / "trace.csv", args.tag, ts, value, quality, acks)
        for n, c in enumerate(result.candidates):
            (args.export / f"rules-{n}.toml").write_text(c.rules_toml(args.tag), encoding="utf-8")
    if args.json:
        doc: dict[str, Any] = {
            "tag": result.tag,
            "samples": result.samples,
            "acks": result.acks,
            "crossings": result.crossings,
            "ceiling": result.ceiling,
            "ceiling_source": result.ceiling_source,
            "candidates": [
                {
                    "label": c.label,
                    "overrides": c.overrides,
                    "refused": c.refused,
                    "raised": c.raised,
                    "chattering": c.chattering,
                    "delays_ms": c.delays,
                    "missed": c.missed,
                    "events": c.events,
                }
                for c in result.candidates
            ],
        }
        print(json.dumps(doc, ensure_ascii=False, allow_nan=False))
        return 0
    _print_tune(result, lang, site)
    return 0


def _print_tune(result: Any, lang: Lang, site: SiteTime) -> None:
    from rich.text import Text

    from agent.review.render import print_table

    base = result.candidates[0]
    rows = []
    for c in result.candidates:
        params = ", ".join(f"{k}={v:g}" for k, v in c.overrides.items()) or t("current", lang)
        if c.refused is not None:
            rows.append(
                [
                    c.label,
                    params,
                    Text(t("refused", lang, why=c.refused), style="bold red"),
                    "",
                    "",
                    "",
                ]
            )
            continue
        cells: list[Any] = [
            c.label,
            params,
            str(c.raised),
            f"{c.chattering} ({base.chattering - c.chattering:+d})",
        ]
        for keys in (("high", "low"), ("high_high", "low_low")):
            d = [x for k in keys for x in c.delays.get(k, [])]
            miss = sum(c.missed.get(k, 0) for k in keys)
            text = Text(
                f"{duration(float(np.median(d))) if d else '—'} / {duration(max(d)) if d else '—'}"
            )
            text.append(f", {miss}", style="bold red" if miss else "")
            cells.append(text)
        rows.append(cells)
    print_table(
        f"{t('title_tune', lang)} — {result.tag}: {result.samples} samples, "
        f"crossings {result.crossings}, "
        f"ceiling: {result.ceiling or '—'} ({result.ceiling_source})",
        [
            t("candidate", lang),
            t("params", lang),
            t("raised", lang),
            t("chatter_removed", lang),
            t("l1_delay", lang),
            t("l2_delay", lang),
        ],
        rows,
    )


def export(cfg: AgentConfig, args: argparse.Namespace) -> int:
    from agent.review.export import parquet_available, write_csv, write_parquet

    site = _site(cfg, args)
    from_ms, to_ms = period(cfg, args, site)
    table = TagTable(cfg)
    names = [n.strip() for n in args.tags.split(",") if n.strip()]
    unknown = [n for n in names if n not in table.index]
    if not names or unknown:
        raise ValueError(
            f"--tags: unknown tag(s) {unknown}" if unknown else "--tags: name at least one tag"
        )
    units = {tg.name: tg.unit for tg in table}
    with History.for_config(cfg, args.config) as h:
        pts = h.points(tags=names, from_ms=from_ms, to_ms=to_ms, with_incidents=True)
    if args.format == "parquet":
        if not parquet_available():
            raise ValueError(
                "--format parquet needs pyarrow (pip install pyarrow); CSV works without it"
            )
        if args.output is None:
            raise ValueError("--format parquet needs --output FILE")
        n = write_parquet(str(args.output), pts, units, site)
    elif args.output is None:
        try:
            n = write_csv(sys.stdout, pts, units, site)
            sys.stdout.flush()
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 141
    else:
        with open(
            os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
            "w",
            encoding="utf-8",
            newline="",
        ) as out:
            n = write_csv(out, pts, units, site)
    print(f"exported {n} readings", file=sys.stderr)
    return 0
