"""``safeedge commission --config FILE``: the go/no-go report before a gateway goes live.

::

    safeedge commission --config /etc/safeedge/agent.toml --installer "王工" \\
        [--out DIR] [--sign] [--send] [--ntp 10.0.0.1] [--unit-file F] [--skip ID,...] [--json]

Runs every check of :data:`provisioning.commission.CHECK_IDS` (PASS / WARN / FAIL with evidence
and the fix), prints a summary, and writes ``DIR/commissioning-<gateway>-<time>.json`` and
``.html`` (self-contained), plus ``.sig.json`` with ``--sign`` (the gateway's TLS key signs the
JSON bytes). ``--send`` queues a ``commissioned`` event (digest and result) in the gateway's
buffer for the agent to deliver. ``--json`` prints the report document instead of the summary.
Exit codes: 0 go (no FAIL), 1 no-go, 2 bad usage.
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

from rich.table import Table

from buffer.errors import StoreError
from provisioning.commission import CHECK_IDS, Check, Context, Options, local_checks, ordered
from provisioning.commission import systemd_check as _systemd
from provisioning.commission_net import broker_checks, cert_check, clock_check
from provisioning.commission_report import (
    build_report,
    queue_event,
    render_html,
    report_bytes,
    sign_report,
)
from provisioning.console import console, emit_json, quiet_pymodbus, safe
from provisioning.identity import IdentityError, load_key

__all__ = ["register", "run"]

_STYLE = {"PASS": "green", "WARN": "yellow", "FAIL": "red"}
_DEFAULTS = Options()
_GROUPS = {"broker.tls": ("broker.tls", "broker.publish_own", "broker.acl")}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("commission", help="installer: go/no-go report (exit 0 go, 1 no-go)")
    p.add_argument("--config", type=Path, required=True, metavar="FILE")
    p.add_argument("--installer", default=None, help="who commissions (default: login name)")
    p.add_argument("--out", type=Path, default=Path(), help="where the report files go")
    p.add_argument("--sign", action="store_true", help="sign with the gateway's TLS key")
    p.add_argument("--send", action="store_true", help="queue a commissioned event upstream")
    p.add_argument("--ntp", action="append", default=[], metavar="HOST[:PORT]")
    p.add_argument("--unit-file", type=Path, default=_DEFAULTS.unit_file)
    p.add_argument("--numba-cache", type=Path, default=_DEFAULTS.numba_cache_dir)
    p.add_argument("--skip", default="", help=f"check ids not to run, of: {', '.join(CHECK_IDS)}")
    p.add_argument("--json", action="store_true", help="the report document on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    quiet_pymodbus()
    skip = frozenset(s.strip() for s in args.skip.split(",") if s.strip())
    unknown = skip - set(CHECK_IDS)
    if unknown:
        console(stderr=True).print(f"safeedge commission: unknown check ids {sorted(unknown)}")
        return 2
    options = Options(
        unit_file=args.unit_file,
        numba_cache_dir=args.numba_cache,
        ntp_servers=tuple(args.ntp),
        skip=skip,
    )
    ctx = Context(config_path=args.config, options=options)
    local_checks(ctx)
    if ctx.cfg is not None and ctx.paths is not None:
        cfg, paths = ctx.cfg, ctx.paths
        _net(ctx, "clock.offset", lambda: [clock_check(options)])
        _net(ctx, "broker.tls", lambda: broker_checks(cfg, paths))
        _net(ctx, "cert.expiry", lambda: [cert_check(paths, options)])
    if "systemd.unit" not in skip:
        ctx.checks.append(_systemd(options.unit_file, options.max_exposure))
    checks = ordered(ctx.checks)
    installer = args.installer or getpass.getuser()
    doc = build_report(
        checks=checks,
        cfg=ctx.cfg,
        config_path=args.config,
        installer=installer,
        now_ms=time.time_ns() // 1_000_000,
    )
    data = report_bytes(doc)
    digest = hashlib.sha256(data).hexdigest()
    signature = None
    notes: list[str] = []
    if args.sign:
        key_file = ctx.paths.tls_key_file if ctx.paths else None
        if key_file is None:
            notes.append("not signed: the config names no [uplink.tls] key_file")
        else:
            try:
                signature = sign_report(data, load_key(key_file))
            except IdentityError as exc:
                notes.append(f"not signed: {exc}")
    gw = doc["gateway"] or "unknown"
    stem = args.out / f"commissioning-{gw}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    args.out.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_bytes(data)
    stem.with_suffix(".html").write_text(render_html(doc, signature), encoding="utf-8")
    if signature is not None:
        sig_text = json.dumps(signature, indent=2) + "\n"
        stem.with_suffix(".sig.json").write_text(sig_text)
    if args.send:
        if ctx.cfg is None or ctx.paths is None:
            notes.append("not sent: no valid config")
        else:
            try:
                seq = queue_event(ctx.cfg, ctx.paths, doc, digest)
                notes.append(f"commissioned event queued in the buffer (event seq {seq})")
            except StoreError as exc:
                notes.append(f"not sent: {exc} (stop the agent while commissioning)")
    go = doc["result"] == "go"
    if args.json:
        emit_json(
            {
                "report": doc,
                "digest": digest,
                "signature": signature,
                "files": [str(stem.with_suffix(s)) for s in (".json", ".html")],
                "notes": notes,
            }
        )
        return 0 if go else 1
    _summary(doc, digest, stem, notes)
    return 0 if go else 1


def _net(ctx: Context, first: str, fn: Callable[[], list[Check]]) -> None:
    """Run network checks unless their first id is skipped (the broker's others follow it)."""
    if first in ctx.options.skip:
        ids = _GROUPS.get(first, (first,))
        ctx.checks += [
            Check(i, i, "WARN", "skipped (--skip)", "run it before go-live") for i in ids
        ]
        return
    ctx.checks += fn()


def _summary(doc: dict[str, object], digest: str, stem: Path, notes: list[str]) -> None:
    out = console()
    table = Table("check", "status", "evidence", "fix")
    for c in doc["checks"]:  # type: ignore[attr-defined]
        style = _STYLE[c["status"]]
        table.add_row(
            safe(c["title"]),
            f"[{style}]{c['status']}[/{style}]",
            safe(c["evidence"]),
            safe(c["fix"]),
        )
    out.print(table)
    go = doc["result"] == "go"
    verdict = "[bold green]GO[/bold green]" if go else "[bold red]NO-GO[/bold red]"
    out.print(f"{verdict}  {safe(doc['site'])}/{safe(doc['gateway'])}  sha256 {digest[:16]}…")
    out.print(f"report: {safe(stem.with_suffix('.html'))} and .json")
    for n in notes:
        out.print(safe(n))
