"""Modbus devices (TCP, RTU over TCP, RTU and ASCII on serial lines) on their links.

``drivers.modbus_build.build_modbus_device(cfg, ...)`` does no I/O. The returned
:class:`ModbusDevice` is an async
context manager; entering never fails because a device is down (channels are opened by the
first poll and reopened by a later one after a transport failure, see :mod:`drivers.mblink`).

Contracts of :meth:`ModbusDevice.poll`:
- one sample per configured tag, ``tag = tag_index[tag.name]``, in the device's tag order;
- it never raises for communication problems: if the device cannot be reached or stops
  answering, every tag not yet read gets ``BAD_COMM`` (NaN) and the remaining requests of that
  poll are skipped, so a dead device costs one ``timeout_s`` per probe; a reply that does not
  answer its request (:class:`~drivers.errors.BadReply`) gives ``BAD_COMM`` to that request's
  tags (the reason is counted); an exception response gives ``BAD_DEVICE`` to that request's
  tags; decoding rules are in :mod:`drivers.codec`;
- ``ts_ms`` is taken when each request completed (or failed);
- ``online`` is False after a poll that could not reach the device (or made no I/O because it
  is lost and not due for a probe) and True after one that did;
- recovery (:mod:`drivers.recovery`): a lost device is probed with one cheap request every
  ``probe_interval_s``; when it answers, the same poll reads every tag;
- refusals (:mod:`drivers.refusals`): exception 2 or 3 to a request that covers more than one
  tag or a gap is bisected in the same poll down to the smallest refused spans; the plan is
  remade around exactly those spans from the next poll on; tag spans are forgotten when the tag
  reads fine, holes after ``refusal_retry_s``. Every new refused span and every re-plan is
  logged once (device, table, span, exception code) and listed in :meth:`health` and
  :meth:`probe`. Other exception codes give BAD_DEVICE to that request's tags and change
  nothing.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType

import numpy as np

from drivers.blockcodec import PollDecoder
from drivers.codec import BIT_TABLES, decode_tag, exact_int, is_exact_int
from drivers.config import Table, TagConfig, WordOrder
from drivers.driverlog import RateLimit, log
from drivers.errors import BadReply, DeviceUnavailable, ProtocolError
from drivers.mblink import Link
from drivers.mbproto import read_request
from drivers.planner import AddressRange, ReadRequest, plan_reads
from drivers.pollbuf import ISOLATED, PollBuffer
from drivers.probe import ProbeRead, ProbeResult
from drivers.recovery import Recovery
from drivers.refusals import BisectResult, Refusals, Refused, RefusedSpan, Span, bisect, merged
from drivers.types import Quality, SampleBatch

__all__ = ["ModbusDevice", "PlanLimits", "wall_clock_ms"]

_log = logging.getLogger("drivers.modbus")
_ISOLATE_CODES = frozenset({2, 3})  # the request itself is refused: find the address


def wall_clock_ms() -> int:
    """UTC epoch milliseconds (the default clock of devices)."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class PlanLimits:
    """A device's planning limits (from its config)."""

    max_registers: int
    max_bits: int
    max_gap: int
    excluded: tuple[AddressRange, ...]


class ModbusDevice:
    """One Modbus unit on its link. See the module contract."""

    def __init__(
        self,
        *,
        name: str,
        unit_id: int,
        poll_interval_s: float,
        timeout_s: float,
        byte_order: WordOrder,
        tags: Sequence[TagConfig],
        tag_ids: Sequence[int],
        limits: PlanLimits,
        link: Link,
        clock_ms: Callable[[], int],
        monotonic: Callable[[], float] = time.monotonic,
        probe_interval_s: float = 2.0,
        backoff_max_s: float = 10.0,
        refusal_retry_s: float = 600.0,
    ) -> None:
        self.name = name
        self.unit_id = unit_id
        self.poll_interval_s = poll_interval_s
        self.timeout_s = timeout_s
        self.byte_order: WordOrder = byte_order
        self.tags = tuple(tags)
        self.online = False
        self.recovery = Recovery(
            poll_interval_s=poll_interval_s,
            probe_interval_s=probe_interval_s,
            backoff_max_s=backoff_max_s,
            shared_line=link.kind != "tcp",
        )
        self.refusals = Refusals(retry_s=refusal_retry_s)
        self._carved: list[RefusedSpan] = []  # carved out of tag refusals in this poll
        self.replans = 0
        self.bad_replies: dict[str, int] = {}
        self.lost_reason = ""  # kind of the failure that lost the device ("" while online)
        self.last_error = ""  # its text
        self.lost_at_ms = 0
        self.last_outage_ms = 0  # duration of the last outage, set when the device came back
        self._limits = limits
        self._learned_limit: dict[bool, int] = {}  # bits? -> a shorter limit the device needs
        self._tag_ids = np.asarray(tag_ids, dtype=np.int32)
        self._link = link
        self._clock_ms = clock_ms
        self._monotonic = monotonic
        self._rate = RateLimit(60.0, monotonic)
        self.requests = self._plan()

    def __repr__(self) -> str:
        return f"<ModbusDevice {self.name} {self._link.key} unit {self.unit_id}>"

    @property
    def bus(self) -> str:
        """The physical link this device's requests travel on. Devices with the same ``bus``
        must be polled by one task, one request at a time (one owner per bus)."""
        return self._link.key

    @property
    def link(self) -> Link:
        return self._link

    async def __aenter__(self) -> ModbusDevice:
        self._link.enter()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._link.leave()

    # -- planning ------------------------------------------------------------------------

    @property
    def requests(self) -> tuple[ReadRequest, ...]:
        """The planned reads of one poll (assigning a plan compiles its decoder)."""
        return self._requests

    @requests.setter
    def requests(self, plan: Sequence[ReadRequest]) -> None:
        self._requests = tuple(plan)
        self._decoder = PollDecoder(self.tags, self._requests, self.byte_order)

    def _plan(self) -> tuple[ReadRequest, ...]:
        lim = self._limits
        return plan_reads(
            self.tags,
            max_registers=self._learned_limit.get(False, lim.max_registers),
            max_bits=self._learned_limit.get(True, lim.max_bits),
            max_gap=lim.max_gap,
            excluded=[*lim.excluded, *self.refusals.ranges()],
        )

    def _replan(self, why: str) -> None:
        """Plan again; counted and logged only when the plan changes."""
        before, plan = len(self._requests), self._plan()
        if plan == self._requests:
            return
        self.requests = plan
        self.replans += 1
        log(_log, logging.INFO, "modbus_replan", device=self.name, why=why,
            requests_before=before, requests_after=len(self._requests))  # fmt: skip

    def health(self) -> dict[str, object]:
        """What the agent reports about this device (events, status, commissioning)."""
        return {
            "device": self.name,
            "online": self.online,
            "reason": self.lost_reason,
            "error": self.last_error,
            "lost_at_ms": self.lost_at_ms,
            "last_outage_ms": self.last_outage_ms,
            "requests": len(self._requests),
            "replans": self.replans,
            "refusals": [s.as_dict() for s in self.refusals.spans],
            "bad_replies": dict(self.bad_replies),
            "link": {"key": self._link.key, "connects": self._link.connects,
                     **dict(self._link.counters)},
        }  # fmt: skip

    # -- polling -------------------------------------------------------------------------

    async def poll(self) -> SampleBatch:
        """Read every tag once (never raises for communication problems)."""
        now = self._monotonic()
        gone = self.refusals.expire(now)
        if gone:
            self._replan(f"retry {len(gone)} refused span(s) after {self.refusals.retry_s:g} s")
        requests, decoder = self._requests, self._decoder  # a re-plan applies from the next poll
        out = PollBuffer.start(len(self.tags), decoder, len(requests))
        reached = False
        failure: DeviceUnavailable | None = None
        if self.recovery.allow(now):
            async with self._link.owned():
                try:
                    if self.recovery.lost and requests:
                        self.recovery.probes += 1
                        # an exception or bad reply also says the device is there: read it all
                        with contextlib.suppress(ProtocolError, BadReply):
                            await self._read_raw(self._probe_request(requests))
                    why: list[str] = []
                    for k, req in enumerate(requests):
                        await self._read(k, req, out, why)
                    reached = True
                    self._forgotten(why)
                    if why:
                        self._replan("; ".join(why))
                except DeviceUnavailable as exc:
                    failure = exc
        out.settle(decoder)
        if not reached:
            out.ts[out.ts == 0] = self._clock_ms()
        self._track(reached, failure, now)
        return SampleBatch(
            tag=self._tag_ids.copy(), ts_ms=out.ts, value=out.value, quality=out.quality,
            exact=out.exact,
        )  # fmt: skip

    def _track(self, reached: bool, failure: DeviceUnavailable | None, started: float) -> None:
        """Outage bookkeeping. The probe schedule counts from the start of the failed poll,
        so a probe every ``probe_interval_s`` stays on the poll slots however long it waited."""
        if reached:
            outage = self.recovery.succeeded(self._monotonic())
            if outage is not None:
                self.last_outage_ms = max(0, self._clock_ms() - self.lost_at_ms)
            self.lost_reason = self.last_error = ""
        elif failure is not None:
            if not self.recovery.lost:
                self.lost_at_ms = self._clock_ms()
            self.recovery.failed(started, failure.kind)
            self.lost_reason, self.last_error = failure.kind, failure.reason
        self.online = reached

    def _probe_request(self, requests: Sequence[ReadRequest]) -> ReadRequest:
        """The cheapest request that tells whether the device answers: the first tag alone."""
        req = min(requests, key=lambda r: r.count)
        p = req.points[0]
        return ReadRequest(req.table, req.address + p.offset, p.width, (p,))

    async def _read_raw(self, req: ReadRequest) -> list[int] | list[bool]:
        pdu = read_request(req.table, req.address, req.count)
        return await self._link.transact(pdu, self.unit_id, self.name, self.timeout_s)

    async def _read(self, k: int, req: ReadRequest, out: PollBuffer, why: list[str]) -> None:
        """Planned request ``k`` into ``out``; appends to ``why`` when the plan must change."""
        try:
            data = await self._read_raw(req)
        except ProtocolError as exc:
            code = exc.exception_code or 0
            end = req.address + req.count
            # a tag already known refused is only re-read alone, not isolated again
            if code in _ISOLATE_CODES and not self.refusals.known(req.table, req.address, end):
                out.status[k] = ISOLATED
                await self._isolate(req, code, out, why)
                return
            out.status[k], out.done_ms[k] = Quality.BAD_DEVICE, self._clock_ms()
            return
        except BadReply as exc:
            self._bad_reply(exc)
            out.done_ms[k] = self._clock_ms()  # status stays BAD_COMM
            return
        # the plan (and its decoder) changes only after the last request of a poll
        (out.bits if req.is_bits else out.registers)[self._decoder.slice(k)] = data
        out.status[k], out.done_ms[k] = Quality.GOOD, self._clock_ms()
        if self.refusals.spans:
            self._forget(req.table, req.address, req.address + req.count)

    def _bad_reply(self, exc: BadReply) -> None:
        self.bad_replies[exc.reason] = self.bad_replies.get(exc.reason, 0) + 1
        suppressed = self._rate.allow(f"bad_reply:{exc.reason}")
        if suppressed is not None:
            log(_log, logging.WARNING, "modbus_bad_reply", device=self.name,
                reason=exc.reason, detail=exc.detail, suppressed=suppressed,
                total=self.bad_replies[exc.reason])  # fmt: skip

    def _forget(self, table: Table, start: int, end: int) -> None:
        """Carve what read fine out of the known tag refusals; logged once per run by
        :meth:`_forgotten` at the end of the poll (tags read alone carve one at a time)."""
        self._carved += self.refusals.tag_read_fine(table, start, end)

    def _forgotten(self, why: list[str]) -> None:
        for table, start, end in merged(self._carved):
            log(_log, logging.INFO, "modbus_refusal_forgotten", device=self.name,
                table=table, span=f"{start}+{end - start}")  # fmt: skip
            why.append(f"{table} {start}+{end - start} reads again")
        self._carved.clear()

    def _learn(self, table: Table, found: Sequence[tuple[int, int, int, bool]],
               why: list[str]) -> None:  # fmt: skip
        now = self._monotonic()
        for start, end, code, holds_tag in found:
            span = RefusedSpan(table, start, end, code, holds_tag, now)
            if self.refusals.add(span):
                log(_log, logging.WARNING, "modbus_refused", device=self.name, table=table,
                    span=f"{start}+{end - start}", exception=code,
                    kind="tag" if holds_tag else "hole")  # fmt: skip
                if len(found) > 1 or not holds_tag:
                    why.append(f"{table} {start}+{end - start} refused ({code})")

    async def _isolate(self, req: ReadRequest, code: int, out: PollBuffer,
                       why: list[str]) -> None:  # fmt: skip
        """Bisect a refused block: set its tags, learn the smallest refused spans."""
        spans = sorted(
            (Span(p.tag, req.address + p.offset, req.address + p.offset + p.width)
             for p in req.points), key=lambda s: (s.start, s.end))  # fmt: skip

        async def read(start: int, count: int) -> list[int] | list[bool]:
            try:
                return await self._read_raw(ReadRequest(req.table, start, count, ()))
            except ProtocolError as exc:
                if (exc.exception_code or 0) in _ISOLATE_CODES:
                    raise Refused(exc.exception_code or 0) from exc
                raise

        try:
            result = await bisect(read, spans, code)
        except (ProtocolError, BadReply) as exc:  # the device changed its mind mid-way
            if isinstance(exc, BadReply):
                self._bad_reply(exc)
            out.bad(req.points, self._clock_ms(), Quality.BAD_DEVICE)
            return
        self._take(req, result, out)
        self._learn(req.table, result.refused, why)
        if not result.explained:
            bits = req.table in BIT_TABLES
            widest = max(p.width for p in req.points)
            self._learned_limit[bits] = max(widest, req.count // 2)
            why.append(f"{req.table} {req.address}+{req.count} refused as a whole: "
                       f"requests up to {self._learned_limit[bits]}")  # fmt: skip
        elif not why:
            why.append(f"{req.table} {req.address}+{req.count} refused ({code})")

    def _take(self, req: ReadRequest, result: BisectResult, out: PollBuffer) -> None:
        now = self._clock_ms()
        for p in req.points:
            data = result.data.get(p.tag)
            if data is None:
                out.bad((p,), now, Quality.BAD_DEVICE)
                continue
            # the rare path: decoded alone by the scalar codec (same results as the block codec)
            tag = self.tags[p.tag]
            value, quality = decode_tag(tag, data, self.byte_order)
            out.value[p.tag], out.quality[p.tag], out.ts[p.tag] = value, quality, now
            if quality == Quality.GOOD and is_exact_int(tag):
                out.exact[p.tag] = exact_int(tag, [int(r) for r in data], self.byte_order)

    # -- commissioning -------------------------------------------------------------------

    async def probe(self) -> ProbeResult:
        """Read-only check for commissioning: connect, then try each planned request once;
        a request refused with exception 2 or 3 is bisected and its refused spans reported.

        Unlike :meth:`poll`, a request that times out does not stop the others (each costs at
        most ``timeout_s``); ``online`` is not changed.
        """
        async with self._link.owned():
            try:
                await self._link.open(self.name, self.timeout_s)
            except DeviceUnavailable as exc:
                reason = f"{exc.kind}: {exc.reason}"
                reads = tuple(
                    self._probe_read(r, f"not sent: {reason}", math.nan) for r in self.requests
                )
                return ProbeResult(self.name, False, reason, reads, self._refusal_dicts())
            results = []
            why: list[str] = []
            for req in self.requests:
                start = time.perf_counter()
                error = ""
                data: tuple[int, ...] = ()
                try:
                    data = tuple(int(v) for v in await self._read_raw(req))
                except ProtocolError as exc:
                    error = exc.reason
                    if (exc.exception_code or 0) in _ISOLATE_CODES and len(req.points) > 1:
                        scratch = PollBuffer.start(len(self.tags), self._decoder, 1)
                        await self._isolate(req, exc.exception_code or 0, scratch, why)
                except BadReply as exc:
                    error = f"bad reply ({exc.reason}): {exc.detail}"
                except DeviceUnavailable as exc:
                    error = f"{exc.kind}: {exc.reason}"
                rtt_ms = (time.perf_counter() - start) * 1000.0
                results.append(self._probe_read(req, error, rtt_ms, data))
            if why:
                self._replan("; ".join(why))
            return ProbeResult(self.name, True, "", tuple(results), self._refusal_dicts())

    def _refusal_dicts(self) -> tuple[dict[str, object], ...]:
        return tuple(s.as_dict() for s in self.refusals.spans)

    def _probe_read(
        self, req: ReadRequest, error: str, rtt_ms: float, data: tuple[int, ...] = ()
    ) -> ProbeRead:
        names = tuple(self.tags[p.tag].name for p in req.points)
        ok = not error
        return ProbeRead(req.table, req.address, req.count, names, ok, error, rtt_ms, data)
