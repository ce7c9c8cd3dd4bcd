"""Bus scans for the installer: which unit ids answer, who they are, what they let us read.

Polite by construction: only reads (FC 01-04) and device identification (FC 43/14), never a
write; requests are paced (at most ``rate`` per second on the link, one at a time); each unit
costs at most ``max_requests`` requests. Every request goes through the drivers' own pymodbus
boundary (:mod:`provisioning.scan_io`): the same clients, timeouts and exception translation as
the agent, so what a scan finds is what the agent will see.

A unit *answers* when a read of holding register 0 gets any reply — data or an exception
response — except exceptions 10 / 11 (a TCP gateway saying that no device answers behind it).
Silence (a timeout) means absent. Units that answered are asked for FC 43/14 identification.

Readable ranges (:meth:`Scanner.ranges`) assume what Modbus devices do: a read succeeds exactly
when every address it covers exists, else exception 2 (or 3). The span is read in blocks of the
table's maximum (125 registers, 2000 bits). A refused block is bisected on its count to find
where the readable run at its start ends (log2(block) requests). Inside a hole, single reads at
steps 1, 2, 4... up to ``resolution`` find the next readable address, and bisection finds where
its run starts. So every boundary found is exact; a readable island narrower than
``resolution`` inside a hole can be missed (``resolution = 1`` finds all, at one request per
address of hole). Cost per table: one request per readable block, plus about
log2(block) per range end and log2(hole) + hole/resolution per hole; never more than
``max_requests`` (the report then says it is incomplete). Exception 1 on a table's first request
means the table (function) is not supported. Ranges are inclusive ``[first, last]`` pairs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from drivers.config import Table
from drivers.errors import DeviceUnavailable, ProtocolError
from drivers.planner import PlannedPoint, ReadRequest
from provisioning.scan_io import EXCEPTION_NAMES, Link, execute, identify

__all__ = [
    "TABLES",
    "Pacer",
    "Reply",
    "ScanReport",
    "Scanner",
    "TableReport",
    "UnitReport",
    "identification_names",
]

TABLES: tuple[Table, ...] = ("holding", "input", "coil", "discrete")
_BLOCK = {"holding": 125, "input": 125, "coil": 2000, "discrete": 2000}
_ABSENT_CODES = frozenset({10, 11})  # gateway path unavailable / target failed to respond
_SPLIT_CODES = frozenset({2, 3})
_OBJECT_NAMES = {0: "vendor", 1: "product_code", 2: "revision"}


def identification_names(objects: dict[int, bytes]) -> dict[str, str]:
    """FC 43 basic objects as text (``vendor``, ``product_code``, ``revision``)."""
    return {
        _OBJECT_NAMES.get(k, f"object_{k}"): v.decode("latin-1").strip()
        for k, v in sorted(objects.items())
    }


class Pacer:
    """At most ``rate`` request starts per second (0: unpaced)."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0

    async def wait(self) -> None:
        now = time.monotonic()
        if self._next > now:
            await asyncio.sleep(self._next - now)
        self._next = max(now, self._next) + self._interval


@dataclass(frozen=True, slots=True)
class Reply:
    """What one request got: ``data`` / ``refused`` (an exception response) / ``silent``."""

    kind: Literal["data", "refused", "silent"]
    code: int = 0  # the exception code when refused
    detail: str = ""

    def describe(self) -> str:
        if self.kind == "refused":
            return f"exception {self.code} ({EXCEPTION_NAMES.get(self.code, 'unknown')})"
        return "data" if self.kind == "data" else f"no answer ({self.detail})"


@dataclass(slots=True)
class TableReport:
    table: str
    supported: bool = True
    ranges: list[tuple[int, int]] = field(default_factory=list)  # inclusive [first, last]
    requests: int = 0
    complete: bool = True
    note: str = ""


@dataclass(slots=True)
class UnitReport:
    unit: int
    reply: str  # what the presence read got
    identification: dict[str, str] = field(default_factory=dict)
    identification_error: str = ""
    tables: list[TableReport] = field(default_factory=list)
    settings: str = ""  # serial scans: "9600 8N1"


@dataclass(slots=True)
class ScanReport:
    """Filled in as the scan goes, so an interrupted scan still reports what it found."""

    target: str
    units_tried: int = 0
    requests: int = 0
    units: list[UnitReport] = field(default_factory=list)
    stopped: str = ""  # "" finished; "interrupted"; or why it stopped early
    elapsed_s: float = 0.0
    combinations: list[dict[str, object]] = field(default_factory=list)  # serial scans


class Scanner:
    """Requests to one link, paced and counted (``report.requests``)."""

    def __init__(
        self,
        *,
        link: Link,
        name: str,
        timeout_s: float,
        pacer: Pacer,
        report: ScanReport,
        max_requests: int = 500,
        resolution: int = 16,
    ) -> None:
        self._link, self._name, self._timeout = link, name, timeout_s
        self._pacer, self._report = pacer, report
        self.max_requests = max_requests
        self.resolution = max(1, resolution)
        link.timeout_s = max(link.timeout_s, timeout_s)

    async def read(self, unit: int, table: Table, address: int, count: int) -> Reply:
        req = ReadRequest(table, address, count, (PlannedPoint(0, 0, count),))
        await self._pacer.wait()
        self._report.requests += 1
        async with self._link.owned():
            try:
                client = await self._link.client(self._name, self._timeout)
                await execute(client, req, unit, self._name, self._timeout)
            except ProtocolError as exc:
                return Reply("refused", exc.exception_code or 0, exc.reason)
            except DeviceUnavailable as exc:
                self._link.reset()  # drop late replies (TCP) / flush the line (RTU)
                return Reply("silent", 0, exc.reason)
        return Reply("data")

    async def present(self, unit: int) -> Reply | None:
        """The reply of a unit that answers, None when it does not."""
        reply = await self.read(unit, "holding", 0, 1)
        if reply.kind == "silent" or (reply.kind == "refused" and reply.code in _ABSENT_CODES):
            return None
        return reply

    async def identify(self, unit: int, found: UnitReport) -> None:
        await self._pacer.wait()
        self._report.requests += 1
        async with self._link.owned():
            try:
                client = await self._link.client(self._name, self._timeout)
                objects = await identify(client, unit, self._name, self._timeout)
            except ProtocolError as exc:
                found.identification_error = exc.reason
                return
            except DeviceUnavailable as exc:
                self._link.reset()
                found.identification_error = exc.reason
                return
        found.identification = identification_names(objects)

    async def ranges(self, unit: int, table: Table, first: int, last: int) -> TableReport:
        """Readable ranges of ``table`` within ``[first, last]`` (see the module docstring)."""
        out = TableReport(table)
        found: list[tuple[int, int]] = []
        scan = _TableScan(self, unit, table, out)
        a, end = first, last + 1
        try:
            while a < end:
                n = min(_BLOCK[table], end - a)
                reply = await scan.read(a, n)
                if reply.kind == "data":
                    found.append((a, a + n))
                    a += n
                elif reply.code == 1 and out.requests == 1:
                    out.supported = False
                    out.note = "function not supported (exception 1)"
                    break
                elif reply.code not in _SPLIT_CODES:
                    out.note = f"{a}+{n}: {reply.describe()}"
                    a += n
                else:
                    p = await scan.prefix(a, n)
                    if p > 0:
                        found.append((a, a + p))
                        a += p  # refused: the prefix search just saw it
                    b = await scan.next_readable(a, end, self.resolution)
                    if b is None:
                        break
                    a = b
        except _StopSearchError as stop:
            out.complete = False
            out.note = str(stop)
        out.ranges = _merged(found)
        return out


class _StopSearchError(Exception):
    """A range search ends early: out of budget, or the unit stopped answering."""


class _TableScan:
    """The searches of one table; every read counts against the unit's budget."""

    def __init__(self, scanner: Scanner, unit: int, table: Table, out: TableReport) -> None:
        self._scanner, self._unit, self._table, self._out = scanner, unit, table, out

    async def read(self, address: int, count: int) -> Reply:
        if self._out.requests >= self._scanner.max_requests:
            raise _StopSearchError(f"stopped after {self._out.requests} requests (--max-requests)")
        self._out.requests += 1
        reply = await self._scanner.read(self._unit, self._table, address, count)
        if reply.kind == "silent":
            raise _StopSearchError(f"no answer at {address}+{count}: {reply.detail}")
        return reply

    async def ok(self, address: int, count: int) -> bool:
        return (await self.read(address, count)).kind == "data"

    async def prefix(self, a: int, n: int) -> int:
        """The longest readable run from ``a`` (``read(a, n)`` was refused): bisection on the
        count, since a read succeeds exactly when every address it covers is readable."""
        lo, hi = 0, n
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if await self.ok(a, mid):
                lo = mid
            else:
                hi = mid
        return lo

    async def next_readable(self, a: int, end: int, cap: int) -> int | None:
        """The first readable address after the refused address ``a`` (None: none before
        ``end``). Single reads at steps 1, 2, 4... (at most ``cap``) find a readable address;
        bisection between it and the last refused one finds where its run starts."""
        x, step = a, 1
        while True:
            y = min(x + step, end - 1)
            if y <= x:
                return None
            if await self.ok(y, 1):
                break
            if y == end - 1:
                return None
            x, step = y, min(step * 2, cap)
        lo, hi = x, y  # the run [hi, y] is readable; lo is not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if await self.ok(mid, y - mid + 1):
                hi = mid
            else:
                lo = mid
        return hi


def _merged(blocks: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Adjacent half-open blocks joined, as inclusive ``(first, last)`` pairs."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(blocks):
        if out and out[-1][1] + 1 == start:
            out[-1] = (out[-1][0], end - 1)
        else:
            out.append((start, end - 1))
    return out


async def scan_units(
    scanner: Scanner,
    report: ScanReport,
    units: list[int],
    *,
    tables: tuple[Table, ...],
    span: tuple[int, int],
    identify_units: bool = True,
    settings: str = "",
    on_unit: Callable[[int, UnitReport | None], None] | None = None,
    silence: int = 0,
) -> int:
    """Probe ``units`` in order; the ones that answer go into ``report.units`` (with their
    identification and readable ranges of ``tables`` over ``span``). With ``silence`` > 0,
    stop after that many consecutive silent units. Returns the number of units tried."""
    silent_run = tried = 0
    for unit in units:
        tried += 1
        report.units_tried += 1
        reply = await scanner.present(unit)
        if reply is None:
            silent_run += 1
            if on_unit is not None:
                on_unit(unit, None)
            if silence and silent_run >= silence:
                break
            continue
        silent_run = 0
        found = UnitReport(unit, reply.describe(), settings=settings)
        report.units.append(found)
        if identify_units:
            await scanner.identify(unit, found)
        for table in tables:
            found.tables.append(await scanner.ranges(unit, table, *span))
        if on_unit is not None:
            on_unit(unit, found)
    return tried
