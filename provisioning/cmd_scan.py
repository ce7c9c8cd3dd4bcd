"""``safeedge scan``: find the devices on a Modbus TCP endpoint or an RS-485 line.

::

    safeedge scan tcp 10.0.0.5[:502] [--units 1-10] [--tables holding,input] [--addresses 0-999]
    safeedge scan serial /dev/ttyUSB0 [--bauds 9600,19200,4800] [--parities N,E] [--units 1-32]

Both read only (see :mod:`provisioning.scan`), at most ``--rate`` requests per second, and
show progress on stderr when it is a terminal. Ctrl-C stops cleanly: the port is closed and
what was found so far is reported (exit 130). ``--json`` prints one JSON document instead of
tables. Exit codes: 0 something answered, 1 nothing answered (or the endpoint cannot be
reached), 2 bad usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import asdict
from typing import Any, Literal, cast

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table as RichTable

from drivers.config import ModbusTcpDeviceConfig, Table
from drivers.errors import DeviceUnavailable
from provisioning.console import console, emit_json, quiet_pymodbus, safe
from provisioning.scan import TABLES, Pacer, Scanner, ScanReport, UnitReport, scan_units
from provisioning.scan_io import tcp_link
from provisioning.serial_sweep import DEFAULT_BAUDS, sweep

__all__ = ["parse_ids", "register", "run"]

_BAUDS = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)


def parse_ids(text: str, *, low: int, high: int) -> list[int]:
    """``"1-5,7"`` → [1, 2, 3, 4, 5, 7]; raises ``argparse.ArgumentTypeError`` outside
    ``[low, high]``."""
    out: list[int] = []
    bad = argparse.ArgumentTypeError(
        f"{text!r}: expected numbers or ranges from {low} to {high}, e.g. 1-5,7"
    )
    for part in text.split(","):
        a, _, b = part.strip().partition("-")
        if not (a.isdigit() and (b.isdigit() or not b)):
            raise bad
        first, last = int(a), int(b or a)
        if not low <= first <= last <= high:
            raise bad
        out += range(first, last + 1)
    return list(dict.fromkeys(out))


def _span(text: str) -> tuple[int, int]:
    ids = parse_ids(text, low=0, high=65535)
    return ids[0], ids[-1]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("scan", help="installer: find the devices on a TCP endpoint or serial line")
    kinds = p.add_subparsers(dest="kind", required=True)
    t = kinds.add_parser("tcp", help="unit ids, identification and readable ranges")
    t.add_argument("target", metavar="HOST[:PORT]")
    t.add_argument("--units", default="1-10", help="unit ids to try (default 1-10)")
    t.add_argument("--tables", default="holding,input,coil,discrete")
    t.add_argument("--addresses", type=_span, default=(0, 999), help="span (default 0-999)")
    t.add_argument("--resolution", type=int, default=16,
                   help="largest step inside a hole (1: find every island)")  # fmt: skip
    t.add_argument("--max-requests", type=int, default=500, help="per unit and table")
    t.add_argument("--timeout", type=float, default=1.0, help="seconds per request")
    t.add_argument("--rate", type=float, default=50.0, help="requests per second (0: unpaced)")
    s = kinds.add_parser("serial", help="sweep baud rates, parities and unit ids on one line")
    s.add_argument("port", metavar="PORT")
    s.add_argument("--bauds", default=",".join(map(str, DEFAULT_BAUDS)))
    s.add_argument("--parities", default="N,E")
    s.add_argument("--units", default="1-32", help="unit ids to try (default 1-32)")
    s.add_argument("--timeout", type=float, default=0.3, help="seconds per request")
    s.add_argument("--rate", type=float, default=20.0, help="requests per second (0: unpaced)")
    s.add_argument("--silence", type=int, default=8,
                   help="stop a combination after N silent ids in a row (0: never)")  # fmt: skip
    s.add_argument("--all-combinations", action="store_true",
                   help="ask units found at one setting again at the others")  # fmt: skip
    for a in (t, s):
        a.add_argument("--no-identify", action="store_true", help="skip FC 43/14")
        a.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.set_defaults(func=run)


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("found {task.fields[found]}"), TimeRemainingColumn(),
        console=console(stderr=True), disable=not enabled, transient=True,
    )  # fmt: skip


def _bad(message: str) -> None:
    raise argparse.ArgumentTypeError(message)


def run(args: argparse.Namespace) -> int:
    quiet_pymodbus()
    host = port = ""
    tables: tuple[str, ...] = ()
    bauds: list[int] = []
    parities: list[str] = []
    try:
        if args.kind == "tcp":
            host, _, port = args.target.partition(":")
            tables = tuple(t.strip() for t in args.tables.split(","))
            if not host or any(t not in TABLES for t in tables) or (port and not port.isdigit()):
                _bad(f"bad target or --tables (tables: {', '.join(TABLES)})")
            units = parse_ids(args.units, low=0, high=255)
            report = ScanReport(target=f"tcp {host}:{port or 502}")
        else:
            bauds = [int(b) for b in args.bauds.split(",")]
            parities = [p.strip().upper() for p in args.parities.split(",")]
            if any(b not in _BAUDS for b in bauds) or any(p not in "NEO" for p in parities):
                _bad(f"bauds from {_BAUDS}, parities N, E or O")
            units = parse_ids(args.units, low=1, high=247)
            report = ScanReport(target=f"serial {args.port}")
    except (argparse.ArgumentTypeError, ValueError) as exc:
        console(stderr=True).print(f"safeedge scan: {safe(exc)}")
        return 2
    err = console(stderr=True)
    progress = _progress(err.is_terminal and not args.json)
    code = 0
    start = time.monotonic()
    with progress:
        try:
            if args.kind == "tcp":
                asyncio.run(_tcp(args, host, int(port or 502), cast(Any, tables), units, report,
                                 progress))  # fmt: skip
            else:
                asyncio.run(_serial(args, bauds, cast(Any, parities), units, report, progress))
        except KeyboardInterrupt:
            report.stopped = "interrupted"
            code = 130
        except DeviceUnavailable as exc:
            report.stopped = exc.reason
    if args.kind == "tcp":
        report.elapsed_s = time.monotonic() - start
    if code == 0:
        code = 0 if report.units else 1
    _show(args, report)
    return code


async def _tcp(
    args: argparse.Namespace,
    host: str,
    port: int,
    tables: tuple[Table, ...],
    units: list[int],
    report: ScanReport,
    progress: Progress,
) -> None:
    task = progress.add_task(f"{host}:{port}", total=len(units), found=0)
    link = tcp_link(ModbusTcpDeviceConfig(name="scan", host=host, port=port))
    link.enter()
    scanner = Scanner(
        link=link, name=f"{host}:{port}", timeout_s=args.timeout, pacer=Pacer(args.rate),
        report=report, max_requests=args.max_requests, resolution=args.resolution,
    )  # fmt: skip
    try:
        async with link.owned():  # unreachable endpoint: one clear error, not N timeouts
            await link.client(f"{host}:{port}", args.timeout)

        def step(unit: int, found: UnitReport | None) -> None:
            progress.update(task, advance=1, found=len(report.units))

        await scan_units(
            scanner, report, units, tables=tables, span=args.addresses,
            identify_units=not args.no_identify, on_unit=step,
        )  # fmt: skip
    finally:
        link.leave()


async def _serial(
    args: argparse.Namespace,
    bauds: list[int],
    parities: list[Literal["N", "E", "O"]],
    units: list[int],
    report: ScanReport,
    progress: Progress,
) -> None:
    task = progress.add_task(args.port, total=len(bauds) * len(parities) * len(units), found=0)

    def step(settings: str, unit: int, found: UnitReport | None) -> None:
        progress.update(
            task, advance=1, found=len(report.units), description=f"{args.port} {settings}"
        )

    await sweep(
        args.port, report, bauds=bauds, parities=parities, units=units, timeout_s=args.timeout,
        rate=args.rate, silence=args.silence, identify_units=not args.no_identify,
        all_combinations=args.all_combinations, on_step=step,
        on_skip=lambda n: progress.update(task, advance=n),
    )  # fmt: skip


def _show(args: argparse.Namespace, report: ScanReport) -> None:
    if args.json:
        emit_json(asdict(report))
        return
    out = console()
    if report.combinations:
        n = len(report.units)
        head = f"{safe(report.target)}: {n} unit{'' if n == 1 else 's'} answered; "
        head += f"{report.units_tried} unit ids tried over {len(report.combinations)} settings"
    else:
        head = f"{safe(report.target)}: {len(report.units)} of {report.units_tried} unit ids "
        head += "answered"
    head += f", {report.requests} requests in {report.elapsed_s:.1f} s"
    out.print(head + (f" [yellow]({safe(report.stopped)})[/yellow]" if report.stopped else ""))
    if not report.units:
        return
    table = RichTable("unit", "settings", "first reply", "identification", "readable ranges")
    for u in report.units:
        ident = " / ".join(safe(v) for v in u.identification.values()) or safe(
            u.identification_error or "-"
        )
        ranges = []
        for t in u.tables:
            if not t.supported:
                ranges.append(f"{t.table}: not supported")
            else:
                spans = ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in t.ranges) or "none"
                more = "" if t.complete else f" (incomplete: {t.note})"
                ranges.append(f"{t.table}: {spans}{more}")
        if u.tables and not any(t.supported for t in u.tables):
            ranges = ["no table readable (answers FC 43 only)" if u.identification else "none"]
        cell = "\n".join(safe(r) for r in ranges) or "-"
        table.add_row(str(u.unit), u.settings or "-", safe(u.reply), ident, cell)
    out.print(table)
