"""Store-and-forward: moves records from the buffer to the uplink and settles them on PUBACK.

Invariants:
- a record is settled as delivered only after the broker acknowledged it (PUBACK with a success
  reason code); a negative PUBACK dead-letters it with the reason; a publish lost to a disconnect
  is released back to the buffer and leased again later (at-least-once, same id);
- records are leased alarm first, then event, then live telemetry (created within the last
  ``backfill_after_s``), then the telemetry backlog, each FIFO by seq (the store's order with
  ``live_since_ms``), and published in that order: after an outage the platform sees current
  readings at once while the backlog fills the telemetry seq gap behind them (``backfill``);
- a rejected record (MQTT 5 PUBACK reason >= 0x80, e.g. 0x87 not authorized) is never a silent
  loss: besides the dead-letter it becomes a ``publish_rejected`` event (stream, seq, id,
  reason) on the event stream. A rejected *event* is dead-lettered, counted and logged only:
  reporting it on the stream that is being refused would loop;
- with ``drain_rate`` > 0, records published as ``backfill`` (older than ``backfill_after_s``)
  go out at most that many per second (a token bucket holding one second's worth), so a long
  outage's backlog does not saturate a thin uplink; fresh records are never throttled. When
  the bucket is empty, the rest of that stream's lease is handed back (FIFO within a stream is
  kept) and later streams' records of the same lease still go out if fresh;
- ``resend`` records (the platform's ``resend`` command) go out before leased records, with
  their original ids, within the same in-flight window; their answers change nothing in the
  store (a lost one is queued again);
- the forwarder runs on the agent's event loop thread, the only thread that touches the store;
  in :meth:`Forwarder.run` the WAL fsync that makes new records leasable runs on a thread of
  its own (:class:`agent.syncthread.SyncThread`, :meth:`buffer.Store.begin_sync`), so a disk
  stalled by other writers never stalls polling, rules or PUBACKs; records are leased only
  once that fsync returned (durable before published, exactly as with the store's inline
  sync), and commits made while it runs wait for the next one (one fsync then covers every
  poll that landed meanwhile);
- deliveries are written with the next append (``Store.settle(defer=True)``): a device poll
  then costs one store transaction, not one for its records and one for their PUBACKs; when no
  append comes within :data:`SETTLE_LINGER_S` they are written on their own. Until written
  only the mark can be lost (a power cut): those records go out again with the same ids.
  Dead-letters are written at once;
- it works only when woken (:meth:`Forwarder.wake`: a store append, PUBACKs, a new session, a
  resend) or when the drain-rate bucket refills for a held backlog: idle means no wakeups;
- a store error (full disk, I/O error, even corruption until the runtime recovers the store)
  is transient here: it is logged at most once a minute, the broker's answers it could not
  apply are kept and applied on the next try (after :data:`STORE_RETRY_S`), and neither
  :meth:`pump` nor :meth:`run` ever ends because of it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Protocol

from agent.codec import encode_envelope, envelope_head, event_body
from agent.codec_v2 import VERSION_PEEK_BYTES, body_version
from agent.logs import RateLimiter, kv
from agent.syncthread import SyncThread
from agent.uplink import Outcome, PublishResult
from agent.uplink.encoding import EnvelopeParts
from buffer import Store, StoreError
from buffer.record import Record, Stream

__all__ = ["SETTLE_LINGER_S", "STORE_RETRY_S", "Forwarder", "ForwarderStats", "Link"]

log = logging.getLogger(__name__)

_MAX_LEASE_BYTES = 4 << 20
STORE_RETRY_S = 1.0
SETTLE_LINGER_S = 2.0
"""How long staged deliveries wait for an append to ride along with (a 1 s poll's comes
first) before they are written alone."""


class Link(Protocol):
    """What the forwarder needs of the uplink (:class:`agent.uplink.Uplink` is one)."""

    @property
    def connected(self) -> bool: ...

    @property
    def inflight(self) -> int: ...

    def publish(
        self, suffix: str, payload: bytes | EnvelopeParts, *, token: Hashable, retain: bool = False
    ) -> bool: ...

    def take_results(self) -> list[PublishResult]: ...


@dataclass(slots=True)
class ForwarderStats:
    published: int = 0
    delivered: int = 0  # acknowledged by the broker (the store writes the mark with an append)
    rejected: int = 0
    lost: int = 0
    resent: int = 0  # resend records acknowledged by the broker
    store_errors: int = 0  # store calls that failed (each retried)


@dataclass(frozen=True, slots=True)
class _Resent:
    """Token of a resend publish (the store is not settled by its answer)."""

    record: Record


class Forwarder:
    """One non-blocking :meth:`pump` step at a time; :meth:`run` pumps whenever woken."""

    def __init__(
        self,
        *,
        store: Store,
        uplink: Link,
        site: str,
        gateway: str,
        backfill_after_s: float,
        max_inflight: int,
        clock_ms: Callable[[], int],
        drain_rate: float = 0.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._uplink = uplink
        self._site = site
        self._gateway = gateway
        self._backfill_after_ms = int(backfill_after_s * 1000)
        self._max_inflight = max_inflight
        self._clock_ms = clock_ms
        self._resends: deque[Record] = deque()
        self._rate = drain_rate
        self._monotonic = monotonic
        self._tokens = max(drain_rate, 1.0)
        self._refilled = monotonic()
        self._limiter = RateLimiter(60.0)
        self._wake = asyncio.Event()
        self._held_s: float | None = None  # backfill held by the bucket: retry after this
        self._timer: asyncio.TimerHandle | None = None
        self._settle_timer: asyncio.TimerHandle | None = None
        self._staged_since = 0.0  # monotonic: when the oldest unwritten delivery was staged
        self._accepted: list[tuple[Stream, int]] = []  # answers not yet applied to the store
        self._rejected: list[tuple[Stream, int, str]] = []
        self.stats = ForwarderStats()
        self._syncer = SyncThread("safeedge-walsync")
        self.wakeups = 0  # times run() woke up (idle cost, for benchmarks and tests)

    def wake(self) -> None:
        """Something to do may have arrived (an append, PUBACKs, a session). Loop thread only."""
        self._wake.set()

    async def run(self) -> None:
        """Pump whenever woken, until cancelled; sleeps without a timer when there is no work."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                self.wakeups += 1
                while True:
                    await self._make_durable()
                    if self._pump_durable() == 0:
                        break
                    await asyncio.sleep(0)  # let PUBACKs and polls in between batches
                if self._held_s is not None and self._timer is None:
                    self._timer = loop.call_later(self._held_s, self._rearm)
                self._held_s = None
        finally:
            for timer in (self._timer, self._settle_timer):
                if timer is not None:
                    timer.cancel()
            self._timer = self._settle_timer = None
            self._syncer.close()

    async def _make_durable(self) -> None:
        """fsync the WAL on the sync thread when records wait to be leased (only when a
        lease could follow, as the store's inline sync did)."""
        if self._budget() <= 0:
            return
        try:
            pending = self._store.begin_sync()
            if pending is None:
                return
            await self._syncer.run(pending.run)
        except StoreError as exc:
            self._store_failed("sync", exc)
            return
        self._store.end_sync(pending)

    def _pump_durable(self) -> int:
        return self.settle_results() + self.publish_pending(sync=False)

    def _rearm(self) -> None:
        self._timer = None
        self.wake()

    def resend(self, records: Iterable[Record]) -> None:
        """Queue already stored records to be published again with their original ids."""
        self._resends.extend(records)
        self.wake()

    def settle_results(self) -> int:
        """Apply the broker's answers to the store; returns how many were handled. Answers the
        store could not take (a store error) are kept and applied on the next call."""
        results = self._uplink.take_results()
        if not results and not (self._accepted or self._rejected):
            return 0
        accepted = self._accepted
        rejected = self._rejected
        lost: list[tuple[Stream, int]] = []
        for result in results:
            outcome = result.outcome
            if isinstance(result.token, _Resent):
                if outcome is Outcome.LOST:
                    self._resends.appendleft(result.token.record)
                elif outcome is Outcome.ACCEPTED:
                    self.stats.resent += 1
                continue
            stream, seq = result.token
            if outcome is Outcome.ACCEPTED:
                accepted.append((stream, seq))
            elif outcome is Outcome.LOST:
                lost.append((stream, seq))
            else:
                rejected.append((stream, seq, result.reason))
        if lost:
            self._store.release(lost)
        self.stats.lost += len(lost)
        staged_before = self._store.staged_settles  # 0: an append wrote the earlier ones
        try:
            self._store.settle(accepted=accepted, rejected=rejected, defer=True)
        except StoreError as exc:
            self._store_failed("settle", exc)
            return len(results)
        if self._store.staged_settles:
            if not staged_before:
                self._staged_since = self._monotonic()
            if self._settle_timer is None:
                self._settle_later(SETTLE_LINGER_S)
        self._accepted, self._rejected = [], []
        if rejected:
            self._report_rejected(rejected)
        self.stats.delivered += len(accepted)
        self.stats.rejected += len(rejected)
        return len(results)

    def _settle_later(self, delay_s: float) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside a loop (a tool, a test): no append will come
            try:
                self._store.flush_settles()
            except StoreError as exc:  # kept: the next append or the close writes them
                self._store_failed("settle", exc)
            return
        self._settle_timer = loop.call_later(delay_s, self._settle_due)

    def _settle_due(self) -> None:
        """The linger timer: write the staged deliveries once the oldest waited
        :data:`SETTLE_LINGER_S` (appends that wrote the earlier ones restart the count, so a
        steady 1 s poll never has a settle-only commit)."""
        self._settle_timer = None
        if not self._store.staged_settles:
            return
        wait = self._staged_since + SETTLE_LINGER_S - self._monotonic()
        if wait > 0:
            self._settle_later(wait)
        else:
            self.flush_settles()

    def flush_settles(self) -> None:
        """Write the deliveries no append carried (the linger timer; before a stop)."""
        try:
            self._store.flush_settles()
        except StoreError as exc:
            self._store_failed("settle", exc)
            if self._store.staged_settles and self._settle_timer is None:
                self._settle_later(STORE_RETRY_S)  # kept: tried again

    def _store_failed(self, doing: str, exc: StoreError) -> None:
        """A store call failed: count, log at most once a minute, and try again later."""
        self.stats.store_errors += 1
        ok, suppressed = self._limiter.allow(f"store:{doing}")
        if ok:
            log.error(
                kv(
                    "forward_store_error",
                    doing=doing,
                    error=exc,
                    errors_total=self.stats.store_errors,
                    suppressed=suppressed,
                    retry_s=STORE_RETRY_S,
                )
            )
        self._held_s = STORE_RETRY_S if self._held_s is None else min(self._held_s, STORE_RETRY_S)

    def _budget(self) -> int:
        """How many records the in-flight window takes now (0: none, or not connected)."""
        if not self._uplink.connected:
            return 0
        inflight = self._uplink.inflight
        budget = self._max_inflight - inflight
        # Refill the window in batches (a quarter at a time): one lease query and one settle
        # transaction per batch instead of per PUBACK.
        if budget <= 0 or (inflight and budget < max(1, self._max_inflight // 4)):
            return 0
        return budget

    def publish_pending(self, *, sync: bool = True) -> int:
        """Lease what the in-flight window allows and publish it; returns how many were sent.
        ``sync``: as :meth:`buffer.Store.lease` (False: only records already durable)."""
        budget = self._budget()
        if budget <= 0:
            return 0
        now = self._clock_ms()
        sent = 0
        while self._resends and sent < budget:
            record = self._resends.popleft()
            if not self._uplink.publish(
                record.stream.wire_name,
                self._envelope(record, now - record.created_ms > self._backfill_after_ms),
                token=_Resent(record),
            ):
                self._resends.appendleft(record)
                return sent
            sent += 1
        if sent >= budget:
            return sent
        limit = budget - sent
        if self._rate > 0:
            t = self._monotonic()
            cap = max(self._rate, 1.0)
            self._tokens = min(cap, self._tokens + (t - self._refilled) * self._rate)
            self._refilled = t
            limit = min(limit, int(self._tokens) + 16)  # + a few fresh records past the limit
        try:
            records = self._store.lease(
                max_count=limit,
                max_bytes=_MAX_LEASE_BYTES,
                live_since_ms=now - self._backfill_after_ms,
                sync=sync,
            )
        except StoreError as exc:
            self._store_failed("lease", exc)
            return sent
        held: Stream | None = None  # the stream whose backfill ran out of tokens
        for i, record in enumerate(records):
            if record.stream is held:
                self._store.release([(record.stream, record.seq)])
                continue
            backfill = now - record.created_ms > self._backfill_after_ms
            if self._rate > 0 and backfill:
                if self._tokens < 1:
                    held = record.stream
                    # Nothing else will wake us for this backlog: the bucket's refill will.
                    self._held_s = (1.0 - self._tokens) / self._rate
                    self._store.release([(record.stream, record.seq)])
                    continue
                self._tokens -= 1
            envelope = self._envelope(record, backfill)
            token = (record.stream, record.seq)
            if not self._uplink.publish(record.stream.wire_name, envelope, token=token):
                # Disconnected between lease and publish: hand the rest back untouched.
                self._store.release((r.stream, r.seq) for r in records[i:])
                break
            sent += 1
        self.stats.published += sent
        return sent

    def _envelope(self, record: Record, backfill: bool) -> bytes | EnvelopeParts:
        """The record's envelope; with its body still deflated when the store kept it so (the
        uplink then splices it into its zlib stream instead of compressing it again)."""
        stream = record.stream.wire_name
        deflated = record.deflated
        if deflated is None:
            return encode_envelope(
                v=body_version(stream, record.payload),  # per record: bodies outlive a config
                site=self._site, gateway=self._gateway, stream=stream, seq=record.seq,
                ts_ms=record.created_ms, backfill=backfill, body=record.payload,
            )  # fmt: skip
        # a record the store still held as appended has its payload too: no inflating at all
        plain = record.payload if record.payload_at_hand else None
        start = deflated.peek(VERSION_PEEK_BYTES) if plain is None else plain[:VERSION_PEEK_BYTES]
        head = envelope_head(
            v=body_version(stream, start),
            site=self._site, gateway=self._gateway, stream=stream, seq=record.seq,
            ts_ms=record.created_ms, backfill=backfill,
        )  # fmt: skip
        return EnvelopeParts(head, deflated, b"}", plain)

    def _report_rejected(self, rejected: list[tuple[Stream, int, str]]) -> None:
        now = self._clock_ms()
        events = [
            event_body(
                "publish_rejected",
                now,
                {
                    "stream": s.wire_name,
                    "seq": q,
                    "id": f"{self._gateway}/{s.wire_name}/{q}",
                    "reason": reason,
                },
            )
            for s, q, reason in rejected
            if s is not Stream.EVENT
        ]
        ok, suppressed = self._limiter.allow("rejected")
        if ok:
            first = rejected[0]
            log.error(
                kv(
                    "publish_rejected",
                    count=len(rejected),
                    stream=first[0].wire_name,
                    seq=first[1],
                    reason=first[2],
                    rejected_total=self.stats.rejected + len(rejected),
                    suppressed=suppressed,
                    remedy="check the broker ACL for this gateway's topics",
                )
            )
        if events:
            try:
                self._store.append(Stream.EVENT, events)
            except StoreError as exc:  # the dead-letter rows still record the loss
                log.error(kv("publish_rejected_event_not_stored", error=exc))  # noqa: TRY400

    def pump(self) -> int:
        """Settle answers, then publish; returns the amount of work done (0 when idle)."""
        return self.settle_results() + self.publish_pending()

    @property
    def idle(self) -> bool:
        """Nothing in flight (the uplink has answered everything it was given)."""
        return self._uplink.inflight == 0
