"""``safeedge scan serial``: sweep line settings and unit ids on one RS-485 line.

Defaults fit Chinese field devices: 9600, 19200 and 4800 baud; 8N1 and 8E1; unit ids 1-32.
For each (baud, parity) combination in that order, every unit id is asked for holding register
0 (see :mod:`provisioning.scan` for what counts as an answer) and the units that answer are
asked for FC 43/14 identification. A combination is stopped early after ``silence``
consecutive silent unit ids (devices on a line are usually numbered from 1); ``silence = 0``
tries every unit id. A unit that answered at one combination is not asked again at later ones
unless ``all_combinations`` is set (a line carries one setting; asking again doubles the time).

A combination the port cannot be set to (some USB adapters, and a Linux pty asked for parity)
is reported with its error and skipped. Each combination opens the port afresh through the
drivers' serial link (one owner per port); nothing is written but read requests. The report
is filled in as the sweep goes: an interrupted sweep (Ctrl-C) still reports what it found. A
port that cannot be opened at all ends the sweep with ``DeviceUnavailable`` (its reason).
"""

from __future__ import annotations

import termios
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, cast

from drivers.config import SerialPortConfig
from drivers.errors import DeviceUnavailable
from provisioning.scan import Pacer, Scanner, ScanReport, UnitReport, scan_units
from provisioning.scan_io import serial_link

__all__ = ["DEFAULT_BAUDS", "DEFAULT_PARITIES", "DEFAULT_UNITS", "sweep"]

DEFAULT_BAUDS = (9600, 19200, 4800)
DEFAULT_PARITIES: tuple[Literal["N", "E", "O"], ...] = ("N", "E")
DEFAULT_UNITS = tuple(range(1, 33))

Progress = Callable[[str, int, UnitReport | None], None]  # (settings, unit, found or None)


async def sweep(
    path: str,
    report: ScanReport,
    *,
    bauds: Sequence[int] = DEFAULT_BAUDS,
    parities: Sequence[Literal["N", "E", "O"]] = DEFAULT_PARITIES,
    units: Sequence[int] = DEFAULT_UNITS,
    timeout_s: float = 0.3,
    rate: float = 20.0,
    silence: int = 8,
    identify_units: bool = True,
    all_combinations: bool = False,
    on_step: Progress | None = None,
    on_skip: Callable[[int], None] | None = None,
) -> ScanReport:
    """Sweep ``path`` (see the module docstring); ``on_step`` is called after every unit id
    tried, ``on_skip(n)`` when a combination stops early with ``n`` unit ids left untried."""
    start = time.monotonic()
    pacer = Pacer(rate)
    answered: set[int] = set()
    for baud in bauds:
        for parity in parities:
            settings = f"{baud} 8{parity}1"
            todo = [u for u in units if all_combinations or u not in answered]
            if len(todo) < len(units) and on_skip is not None:
                on_skip(len(units) - len(todo))  # already found at an earlier combination
            # the CLI checks baud and parity against SerialPortConfig's choices
            port = SerialPortConfig(name="scan", path=path, baudrate=cast(Any, baud), parity=parity)
            link = serial_link(port)
            link.enter()
            scanner = Scanner(
                link=link, name=f"{path} {settings}", timeout_s=timeout_s, pacer=pacer,
                report=report,
            )  # fmt: skip
            before = len(report.units)
            error = ""

            def step(unit: int, found: UnitReport | None, settings: str = settings) -> None:
                if on_step is not None:
                    on_step(settings, unit, found)

            try:
                try:  # a port that cannot be opened stops the sweep here, saying which
                    async with link.owned():
                        await link.client(f"{path} {settings}", timeout_s)
                except DeviceUnavailable as exc:
                    reason = f"cannot open {path}: {exc.reason} (check the path and dialout)"
                    raise DeviceUnavailable(path, reason) from exc
                tried = await scan_units(
                    scanner, report, todo, tables=(), span=(0, 0),
                    identify_units=identify_units, settings=settings, on_unit=step,
                    silence=silence,
                )  # fmt: skip
            except termios.error as exc:  # the port refuses these settings (not an OSError)
                tried, error = 0, f"the port refuses {settings}: {exc.args[-1]}"
            finally:
                link.leave()  # closes the port, also when interrupted
                report.elapsed_s = time.monotonic() - start
            got = [u.unit for u in report.units[before:]]
            answered.update(got)
            early = tried < len(todo)
            report.combinations.append(
                {"settings": settings, "tried": tried, "answered": got, "stopped_early": early,
                 "error": error}
            )  # fmt: skip
            if early and on_skip is not None:
                on_skip(len(todo) - tried)
    return report
