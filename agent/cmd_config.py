"""``safeedge check-config FILE``: validate a config file before it is deployed.

Runs exactly the loading and validation of ``safeedge run`` (:func:`agent.config.load_config`),
so a file that passes here builds in the agent. It opens no other file. With ``--files`` it
also makes the agent's one file-system check (:func:`agent.config.file_issues`: a ``stat`` of the
TLS, password and buffer files and data_dir, e.g. a missing ``ca_file`` or ``buffer.path``
naming a directory); use it on the gateway, where those files are. ``safeedge run`` always
makes it.

Set points and units (:mod:`agent.setpoints`): a limit looser than its template's regulatory
ceiling, and a tag whose unit is not its template's, are warnings on stderr
(``FILE: PATH: warning: MESSAGE (hint: HINT)``) that do not change the exit code; with
``--strict`` they are errors (exit 78). The agent itself accepts such a config: the regulation
is the site's to meet, and ``safeedge commission`` fails it.

Exit codes: 0 valid (a one-line summary on stdout); 78 (EX_CONFIG) invalid, unreadable or
missing (every issue on stderr, one per line: ``FILE: PATH: MESSAGE (hint: HINT)``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent.config import AgentConfig, ConfigError, load_config
from agent.config.retention import project_telemetry, retention_warnings
from agent.setpoints import setpoint_findings

__all__ = ["register", "summary"]

_EX_CONFIG = 78


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "check-config",
        help="validate a config file (exit 0 valid, 78 invalid)",
        description="Validate a SafeEdge config file and list every problem found.",
    )
    p.add_argument("file", metavar="FILE", type=Path, help="agent config file (TOML)")
    p.add_argument(
        "--files",
        action="store_true",
        help="also check the TLS, password and buffer files it names exist (as run does)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="set points above their template's regulatory ceiling, and unit mismatches, "
        "are errors (default: warnings)",
    )
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    path: Path = args.file
    try:
        cfg = load_config(path, check_files=bool(getattr(args, "files", False)))
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        count = len(exc.issues)
        print(
            f"safeedge: {path}: {count} problem{'s' if count != 1 else ''}, config not valid",
            file=sys.stderr,
        )
        return _EX_CONFIG
    findings = setpoint_findings(cfg)
    strict = bool(getattr(args, "strict", False))
    label = "error" if strict else "warning"
    for f in findings:
        print(f"{path}: {f.path}: {label}: {f.message} (hint: {f.hint})", file=sys.stderr)
    if findings and strict:
        count = len(findings)
        print(
            f"safeedge: {path}: {count} set point problem{'s' if count != 1 else ''} "
            "(--strict), config not accepted",
            file=sys.stderr,
        )
        return _EX_CONFIG
    note = f" ({len(findings)} warning{'s' if len(findings) != 1 else ''})" if findings else ""
    print(f"{path}: ok: {summary(cfg)}{note}")
    p = project_telemetry(cfg)
    print(
        f"{path}: telemetry ~{p.bytes_per_day / 2**20:.1f} MiB/day: the buffer holds about "
        f"{p.days_held:.1f} days (retention {p.retention_days:g} days)"
    )
    for warning in retention_warnings(cfg):
        print(f"{path}: warning: {warning}", file=sys.stderr)
    from agent.runtime.incidents import recorder_warnings  # numpy: only when the config is ok

    for warning in recorder_warnings(cfg):
        print(f"{path}: warning: {warning}", file=sys.stderr)
    return 0


def summary(cfg: AgentConfig) -> str:
    """One line: ``site S gateway G: 2 devices, 14 tags, 3 rules, 1 serial port``."""
    tags = sum(len(d.tags) for d in cfg.devices)
    counts = [
        _count(len(cfg.devices), "device"),
        _count(tags, "tag"),
        _count(len(cfg.rules), "rule"),
        _count(len(cfg.serial_ports), "serial port"),
    ]
    return f"site {cfg.gateway.site} gateway {cfg.gateway.id}: " + ", ".join(counts)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
