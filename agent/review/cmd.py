"""``safeedge review alarms | incidents | incident ID | tune | export --config FILE``.

Reads the local buffer read-only (safe while the agent runs; no uplink needed). Times given as
``--from``/``--to`` are ISO 8601; without an offset they are site time (``--tz``, else
``[review].timezone``); a bare date as ``--to`` includes that whole day. Report text follows
``--lang`` (else ``[review].lang``).

Exit codes: 0 ok; 1 the buffer is unreadable; 2 bad arguments; 78 bad config or key file.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from agent.config import AgentConfig, ConfigError, load_config

__all__ = ["register"]

_EX_CONFIG = 78
_DAY_MS = 86_400_000


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "review", help="review alarms, incidents and thresholds from the local buffer"
    )
    cmds = p.add_subparsers(dest="review_command", metavar="ACTION", required=True)

    def common(c: argparse.ArgumentParser, *, period: bool) -> None:
        c.add_argument("--config", required=True, type=Path, metavar="FILE", help="agent config")
        c.add_argument(
            "--lang", choices=("en", "zh"), help="report language (default: [review].lang)"
        )
        c.add_argument("--tz", metavar="ZONE", help="site time zone (default: [review].timezone)")
        if period:
            c.add_argument(
                "--from", dest="start", metavar="TIME", help="start (default: 7 days before --to)"
            )
            c.add_argument("--to", dest="end", metavar="TIME", help="end, exclusive (default: now)")

    a = cmds.add_parser("alarms", help="alarm-system KPIs (EEMUA 191 / ISA-18.2) for a period")
    common(a, period=True)
    a.add_argument("--html", type=Path, metavar="FILE", help="also write the HTML report")
    a.add_argument(
        "--fleeting-s", type=float, help="fleeting below this (default [review].fleeting_s)"
    )
    a.set_defaults(func=_run, action="alarms")

    s = cmds.add_parser("incidents", help="list the recorded incidents")
    common(s, period=False)
    s.set_defaults(func=_run, action="incidents")

    i = cmds.add_parser("incident", help="one incident's report (HTML, CSV, JSON)")
    common(i, period=False)
    i.add_argument("id", metavar="ID", help="as listed by 'safeedge review incidents'")
    i.add_argument("--html", type=Path, metavar="FILE")
    i.add_argument("--csv", type=Path, metavar="FILE", help="the window's samples")
    i.add_argument("--json", type=Path, metavar="FILE", help="the report's data")
    i.set_defaults(func=_run, action="incident")

    tu = cmds.add_parser("tune", help="what-if replay of candidate rule parameters for one tag")
    common(tu, period=True)
    tu.add_argument("--tag", required=True)
    tu.add_argument("--param", action="append", required=True, metavar="KEY=V1,V2,...")
    tu.add_argument("--export", type=Path, metavar="DIR", help="write trace.csv and rules-N.toml")
    tu.add_argument("--json", action="store_true", help="print the results (and events) as JSON")
    tu.set_defaults(func=_run, action="tune")

    e = cmds.add_parser("export", help="readings as tidy CSV (or Parquet with pyarrow)")
    common(e, period=True)
    e.add_argument("--tags", required=True, help="comma-separated tag names")
    e.add_argument("--format", choices=("csv", "parquet"), default="csv")
    e.add_argument("--output", "-o", type=Path, metavar="FILE", help="default: stdout (csv only)")
    e.set_defaults(func=_run, action="export")


def _run(args: argparse.Namespace) -> int:
    from agent.review.history import HistoryError

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return _EX_CONFIG
    try:
        from agent.review import actions

        return int(getattr(actions, args.action)(cfg, args))
    except ValueError as exc:
        print(f"safeedge review {args.action}: {exc}", file=sys.stderr)
        return 2
    except HistoryError as exc:
        print(f"safeedge review: {exc}", file=sys.stderr)
        return _EX_CONFIG if exc.needs_human else 1


def period(cfg: AgentConfig, args: argparse.Namespace, site: object) -> tuple[int, int]:
    """(from_ms, to_ms) of ``--from``/``--to``."""
    from agent.review.text import SiteTime

    assert isinstance(site, SiteTime)
    to_ms = site.parse("--to", args.end, end=True) if args.end else time.time_ns() // 1_000_000
    from_ms = site.parse("--from", args.start, end=False) if args.start else to_ms - 7 * _DAY_MS
    if to_ms <= from_ms:
        raise ValueError("--to must be after --from")
    return from_ms, to_ms
