"""``safeedge identity``: the gateway's key, CSR and certificate (see :mod:`provisioning.identity`).

::

    safeedge identity create --site S1 --gateway G1 [--dir D] [--curve p256]
        → D/gateway.key (0600) and D/gateway.csr; prints the key fingerprint
    safeedge identity install --cert signed.pem --ca platform-ca.pem [--dir D]
        → checks, then D/gateway.crt and D/ca.crt
    safeedge identity show [--dir D]
        → re-checks the installed files, prints subject, validity and fingerprints

``--config FILE`` takes site and gateway from the agent config instead. Every action has
``--json``. Exit codes: 0 done, 1 a check failed (the error names it and its fix), 2 bad usage.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

from agent.config import ConfigError, load_config
from provisioning.console import console, emit_json, safe
from provisioning.identity import (
    IdentityError,
    create_identity,
    install_certificate,
    installed,
)

__all__ = ["DEFAULT_DIR", "register", "run"]

DEFAULT_DIR = Path("/etc/safeedge/identity")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("identity", help="installer: gateway key, CSR and certificate")
    actions = p.add_subparsers(dest="action", required=True)
    c = actions.add_parser("create", help="create the gateway key (0600) and its CSR")
    i = actions.add_parser("install", help="check and install the signed certificate and CA")
    s = actions.add_parser("show", help="check and show the installed identity")
    for a in (c, i, s):
        a.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"default {DEFAULT_DIR}")
        a.add_argument("--json", action="store_true", help="one JSON document on stdout")
    for a in (c, i):
        a.add_argument("--config", type=Path, default=None, help="take site and gateway from it")
        a.add_argument("--site", default=None)
        a.add_argument("--gateway", default=None)
    c.add_argument("--curve", default="p256", choices=("p256", "p384"))
    c.add_argument("--owner", default=None, help="owner of the key: the agent's user (safeedge)")
    i.add_argument("--cert", type=Path, required=True, help="the certificate the platform signed")
    i.add_argument("--ca", type=Path, required=True, help="the platform CA certificate (PEM)")
    p.set_defaults(func=run)


def _ids(args: argparse.Namespace) -> tuple[str | None, str | None]:
    site, gateway = args.site, args.gateway
    if args.config is not None:
        cfg = load_config(args.config)
        site, gateway = site or cfg.gateway.site, gateway or cfg.gateway.id
    return site, gateway


def run(args: argparse.Namespace) -> int:
    err = console(stderr=True)
    try:
        if args.action == "show":
            info = installed(args.dir)
            doc = {"ok": True, "dir": str(args.dir), **asdict(info)}
        elif args.action == "create":
            site, gateway = _ids(args)
            if not site or not gateway:
                err.print("safeedge identity create: give --site and --gateway (or --config)")
                return 2
            key, csr, fp = create_identity(
                args.dir, site=site, gateway=gateway, curve=args.curve, owner=args.owner
            )
            doc = {
                "ok": True,
                "site": site,
                "gateway": gateway,
                "key_file": str(key),
                "csr_file": str(csr),
                "key_fingerprint": fp,
            }
        else:
            site, gateway = _ids(args)
            info = install_certificate(
                args.dir, cert_file=args.cert, ca_file=args.ca, site=site, gateway=gateway
            )
            doc = {"ok": True, "dir": str(args.dir), **asdict(info)}
    except IdentityError as exc:
        if args.json:
            emit_json({"ok": False, "check": exc.what, "error": exc.message, "hint": exc.hint})
        else:
            err.print(f"safeedge identity {args.action}: {safe(exc.message)}")
            err.print(f"  fix: {safe(exc.hint)}")
        return 1
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if args.json:
        emit_json(doc)
        return 0
    out = console()
    if args.action == "create":
        out.print(f"key:  {safe(doc['key_file'])} (mode 0600; never leaves this gateway)")
        out.print(f"CSR:  {safe(doc['csr_file'])} (send it to the platform to be signed)")
        out.print(f"key fingerprint (SHA-256): [bold]{doc['key_fingerprint']}[/bold]")
        out.print("read the fingerprint to the platform operator: it must match their view")
    else:
        out.print(f"[green]ok[/green]: {safe(doc['subject'])}, issued by {safe(doc['issuer'])}")
        out.print(f"valid for {doc['days_left']:.1f} more days")
        out.print(f"certificate SHA-256: {doc['fingerprint']}")
        out.print(f"key fingerprint:     {doc['key_fingerprint']}")
    return 0
