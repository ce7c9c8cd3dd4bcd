"""``safeedge probe --config FILE [--device D] [--json]``: read every configured tag once.

Shows, per tag: device, tag, address, raw registers (hex), decoded value, unit, quality and
the reason when not good, the rule limits, and whether the value is plausible for its template;
then the requests used against the tag count (what block reads save). See
:mod:`provisioning.probe`. Exit codes: 0 every tag good (and plausible where judged), 1 some
tag not good or implausible, or a device not answering, 2 unknown device, 78 invalid config.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import asdict
from pathlib import Path

from rich.table import Table

from agent.config import ConfigError, load_config
from drivers.errors import DriverConfigError
from provisioning.console import console, emit_json, quiet_pymodbus, safe
from provisioning.probe import ProbeReport, probe_config

__all__ = ["register", "run", "verdict"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("probe", help="installer: read every configured tag once and show it")
    p.add_argument("--config", type=Path, required=True, metavar="FILE")
    p.add_argument("--device", default=None, help="only this device")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.set_defaults(func=run)


def verdict(report: ProbeReport) -> bool:
    """True when every device answered and every tag is good and not implausible."""
    devices = all(d.answered for d in report.devices)
    return devices and all(t.quality == "good" and t.plausible is not False for t in report.tags)


def run(args: argparse.Namespace) -> int:
    quiet_pymodbus()
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 78
    try:
        report = probe_config(cfg, device=args.device)
    except KeyError:
        known = ", ".join(d.name for d in cfg.devices)
        console(stderr=True).print(f"safeedge probe: no device {safe(args.device)!r} ({known})")
        return 2
    except DriverConfigError as exc:
        console(stderr=True).print(f"safeedge probe: {safe(exc)}")
        return 78
    ok = verdict(report)
    if args.json:
        emit_json({"ok": ok, "requests": report.requests, "tag_count": len(report.tags),
                   **asdict(report)})  # fmt: skip
        return 0 if ok else 1
    out = console()
    table = Table("device", "tag", "address", "raw", "value", "unit", "quality", "limits",
                  "plausible")  # fmt: skip
    for t in report.tags:
        value = "-" if t.value is None else f"{t.value:.6g}"
        quality = "[green]good[/green]" if t.quality == "good" else f"[red]{t.quality}[/red]"
        if t.reason:
            quality += f"\n{safe(t.reason)}"
        limits = " ".join(f"{k}={v:g}" for k, v in t.limits.items()) or "-"
        if t.plausible is None:
            plaus = "-"
        else:
            lo, hi = t.plausible_span or (math.nan, math.nan)
            plaus = "yes" if t.plausible else f"[yellow]no[/yellow] ({lo:g}..{hi:g})"
        table.add_row(safe(t.device), safe(t.tag), t.address, t.raw or "-", value,
                      safe(t.unit), quality, limits, plaus)  # fmt: skip
    out.print(table)
    for d in report.devices:
        if not d.answered:
            out.print(f"[red]{safe(d.device)}: no answer[/red]: {safe(d.error)}")
        for r in d.refused:
            out.print(f"[yellow]{safe(d.device)}: refused[/yellow] {safe(r)}")
    out.print(f"{report.requests} requests for {len(report.tags)} tags"
              + (" — all good" if ok else ""))  # fmt: skip
    return 0 if ok else 1
