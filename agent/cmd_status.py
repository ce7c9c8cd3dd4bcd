"""``safeedge status``: what the running agent reports on its local control socket.

Devices, open alarms, buffer, uplink, config hash and degraded reasons, as tables (``rich``),
as JSON (``--json``, the snapshot of agent/runtime/status.py as it is) or refreshed every few
seconds (``--watch``). The socket is found from ``--socket``, else from ``--config`` (as the
agent finds it), else ``/run/safeedge/status.sock``.

Exit codes: 0 the agent answered (also when degraded: the answer says so); 1 no agent answered
(not running, or no permission: the socket is 0660, for the agent's user and group); 78 the
``--config`` given cannot be loaded.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import socket
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["query", "register", "render"]

_EX_CONFIG = 78


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("status", help="show the running agent's devices, alarms, buffer, uplink")
    p.add_argument("--socket", type=Path, default=None, help="the agent's status socket")
    p.add_argument("--config", "-c", type=Path, default=None, help="find the socket from this")
    p.add_argument("--json", action="store_true", help="print the snapshot as JSON")
    p.add_argument(
        "--watch", nargs="?", type=float, const=2.0, default=None, metavar="SECONDS",
        help="refresh every SECONDS (default 2) until interrupted",
    )  # fmt: skip
    p.set_defaults(func=_main)


def query(path: Path, timeout_s: float = 5.0) -> dict[str, Any]:
    """One request on the socket; raises OSError when no agent answers."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        s.connect(str(path))
        s.sendall(b"status\n")
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    doc = json.loads(b"".join(chunks))
    if not isinstance(doc, dict) or "error" in doc:
        raise OSError(f"{path}: unexpected answer: {str(doc)[:200]}")
    return doc


def _socket(args: argparse.Namespace) -> Path | int:
    if args.socket is not None:
        return Path(args.socket)
    if args.config is not None:
        from agent.config import ConfigError, load_config
        from agent.config.operations import status_socket_path

        try:
            return status_socket_path(load_config(args.config))
        except ConfigError as exc:
            print(str(exc), file=sys.stderr)
            return _EX_CONFIG
    from agent.config.operations import DEFAULT_STATUS_SOCKET

    return DEFAULT_STATUS_SOCKET


def _main(args: argparse.Namespace) -> int:
    path = _socket(args)
    if isinstance(path, int):
        return path
    while True:
        try:
            doc = query(path)
        except (OSError, ValueError) as exc:
            print(f"safeedge status: no answer on {path}: {exc}", file=sys.stderr)
            if args.watch is None:
                return 1
            doc = None
        if doc is not None:
            if args.json:
                print(json.dumps(doc, indent=None if args.watch else 2), flush=True)
            else:
                render(doc, clear=args.watch is not None)
        if args.watch is None:
            return 0
        time.sleep(max(args.watch, 0.2))


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _num(x: float | None, unit: str = "") -> str:
    return "-" if x is None else f"{x:g}{unit}"


def render(doc: dict[str, Any], *, clear: bool = False) -> None:
    """Tables for a terminal (plain text when not a terminal)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    # a pipe or a file gets whole lines (rich would fold them at 80 columns)
    console = Console(width=None if sys.stdout.isatty() else 200)
    if clear:
        console.clear()
    e = escape  # every string comes from the agent's config or the network: no markup
    head = (
        f"[bold]{e(doc['site'])}/{e(doc['gateway'])}[/] agent {e(doc['agent'])} "
        f"config {e(doc['config_hash'])} up {doc['uptime_s']:.0f} s at {_when(doc['ts_ms'])} UTC"
    )
    if doc.get("kernels"):
        head += f" kernels {e(doc['kernels'])}"
    console.print(head)
    if doc.get("kernels") == "jit" and doc.get("kernels_reason"):
        console.print(f"[yellow]kernels jit:[/] {e(doc['kernels_reason'])}")
    if doc["degraded"]:
        for reason in doc["degraded"]:
            console.print(f"[bold red]DEGRADED[/] {e(reason)}")
    else:
        console.print("[green]not degraded[/]")
    t = Table(title="devices")
    for col in ("device", "driver", "state", "polls", "req/cycle", "rtt p50", "rtt p95",
                "last good", "last error"):  # fmt: skip
        t.add_column(col)
    for d in doc["devices"]:
        err = d["last_error"]
        reason = d.get("last_error_reason")
        if err and reason and reason != err:
            err = f"{reason}: {err}"
        if err:
            err = f"{err} at {_when(d['last_error_ms'])}"
        t.add_row(
            e(d["name"]), e(d["driver"]), e(d["state"]), str(d["polls"]),
            _num(d["requests_per_cycle"]), _num(d["rtt_p50_ms"], " ms"),
            _num(d["rtt_p95_ms"], " ms"), _when(d["last_good_ms"]), e(err or "-"),
        )  # fmt: skip
    console.print(t)
    a = Table(title=f"open alarms ({len(doc['alarms'])})")
    for col in ("tag", "alarm", "level", "since", "acked", "alarm_id"):
        a.add_column(col)
    for x in doc["alarms"]:
        a.add_row(
            e(x["tag"]), e(x["alarm"]), str(x["level"]), _when(x["since_ms"] or None),
            "yes" if x["acked"] else "NO", e(x["alarm_id"]),
        )  # fmt: skip
    console.print(a)
    buf = doc.get("buffer")
    if buf is not None:
        title = f"buffer {buf['bytes'] / 2**20:.1f} of {buf['capacity_bytes'] / 2**20:.0f} MiB"
        if buf.get("file_bytes") is not None:
            title += f", file {buf['file_bytes'] / 2**20:.1f} MiB"
        if buf.get("disk_free_bytes") is not None:
            title += f", disk free {buf['disk_free_bytes'] / 2**30:.1f} GiB"
        b = Table(title=title)
        for col in ("stream", "backlog", "oldest undelivered", "delivered", "MiB", "MiB/day",
                    "days held", "retention"):  # fmt: skip
            b.add_column(col)
        for name, s in buf["streams"].items():
            per_day = s["bytes_per_day"]
            b.add_row(
                e(name),
                str(s["undelivered"]) if s.get("forwarded", True)
                else f"local ({s.get('local_records', 0)})",
                _when(s["oldest_undelivered_ms"]),
                str(s["delivered"]), f"{s['bytes'] / 2**20:.2f}",
                "-" if per_day is None else f"{per_day / 2**20:.2f}", _num(s["days_held"]),
                f"{s['retention_days']:g} d",
            )  # fmt: skip
        console.print(b)
        for w in buf.get("warnings", []):
            console.print(f"[yellow]warning[/] {e(w)}")
    up = doc["uplink"]
    u = Table(title="uplink")
    for col in ("state", "session", "in flight", "delivered", "drain /s", "last error"):
        u.add_column(col)
    u.add_row(
        e(up["state"]), _num(up["session"]), str(up["in_flight"]), str(up["delivered"]),
        _num(up["drain_per_s"]), e(up["last_error"] or "-"),
    )  # fmt: skip
    console.print(u)
