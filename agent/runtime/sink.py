"""Appending records to the store: the durability point, with failures counted, not raised;
and the store's upkeep: maintenance, its reports as events, corruption found while running.

Invariants: the store is touched only from the event loop thread (the integrity check runs in
a worker thread on its own read-only connection); a refused append (full disk, I/O error) is
counted in ``stats.append_failures`` always and logged at most once a minute per stream (a
full disk fails every poll); every successful append sets ``wake`` so the forwarder does not
wait for its idle timeout; inside :meth:`RecordSink.one_transaction` (one device poll) the
appends are collected and committed in one store transaction when it ends, and the work
deferred with :meth:`RecordSink.after_commit` (what must follow a durable alarm record) runs
after that commit; the store's reports (``seq_gap``, ``telemetry_refused``,
``buffer_corrupt``) become events at open and after every maintenance pass, and refused
telemetry is reported at once the first time and then at most once a minute; a store error in
maintenance is logged and retried at the next pass, never ends the task; corruption found
while running (``quick_check`` every :data:`INTEGRITY_EVERY_S`, or a
``BufferCorruptError``) is handled as at start-up: the store moves the file aside, salvages
it, continues above its seq ledger, and the reports go out at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Final

from agent.codec import event_body
from agent.logs import RateLimiter, kv
from agent.runtime.reports import encoder
from agent.runtime.stats import RuntimeStats
from buffer import BufferClosedError, BufferCorruptError, Store, StoreError
from buffer.record import Stream

__all__ = ["INTEGRITY_EVERY_S", "MAINTAIN_EVERY_S", "RecordSink"]

log = logging.getLogger("safeedge.pipeline")

MAINTAIN_EVERY_S: Final = 60.0
INTEGRITY_EVERY_S: Final = 300.0


class RecordSink:
    """Appends payloads to one open :class:`Store` on behalf of every part of the runtime."""

    def __init__(
        self,
        *,
        store: Store,
        stats: RuntimeStats,
        clock_ms: Callable[[], int],
        wake: Callable[[], None],
    ) -> None:
        self.store = store
        self._stats = stats
        self._clock_ms = clock_ms
        self._wake = wake
        self._log_limit = RateLimiter(60.0)
        self._refusal_limit = RateLimiter(60.0)
        self._encode = encoder(clock_ms)
        self._parts: dict[Stream, list[bytes]] | None = None  # collecting (one_transaction)
        self._state: dict[str, bytes] = {}
        self._local_state: set[str] = set()  # state keys that came with INCIDENT appends
        self._after: list[Callable[[], None]] = []

    def append(
        self, stream: Stream, payloads: list[bytes], *, state: Mapping[str, bytes] | None = None
    ) -> None:
        """Append ``payloads`` (and ``state``, in the same transaction: see Store.append);
        inside :meth:`one_transaction`, collected for its commit."""
        if self._parts is not None:
            if payloads:
                self._parts.setdefault(stream, []).extend(payloads)
                self._state.update(state or {})
                if stream is Stream.INCIDENT:
                    self._local_state.update(state or {})
            return
        try:
            self.store.append(stream, payloads, state=state)
        except StoreError as exc:
            self._append_failed(stream, len(payloads), exc)
            return
        self._wake()

    @contextmanager
    def one_transaction(self) -> Iterator[None]:
        """Collect every append made inside (one device poll) and commit them together in one
        store transaction at the end (Store.append_batch); then run the :meth:`after_commit`
        work, also when the commit failed (the failure counted as for :meth:`append`). Not
        reentrant: the event loop thread's synchronous work only (nothing awaits inside)."""
        if self._parts is not None:
            raise RuntimeError("one_transaction is not reentrant")
        self._parts = {}
        try:
            yield
        finally:  # what was collected before an error is committed all the same
            parts, state, after = self._parts, self._state, self._after
            local = self._local_state
            self._parts, self._state, self._after, self._local_state = None, {}, [], set()
            self._commit(parts, state, local)
            for work in after:
                work()

    def after_commit(self, work: Callable[[], None]) -> None:
        """Run ``work`` once what was appended so far is committed (at once outside
        :meth:`one_transaction`)."""
        if self._parts is None:
            work()
        else:
            self._after.append(work)

    def _commit(
        self, parts: dict[Stream, list[bytes]], state: dict[str, bytes], local: set[str]
    ) -> None:
        if not parts:
            return
        try:
            done = self.store.append_batch(parts, state=state or None)
        except StoreError as exc:
            if Stream.INCIDENT not in parts or len(parts) == 1:
                for stream, payloads in parts.items():
                    self._append_failed(stream, len(payloads), exc)
                return
            # A full disk (or any failure) must not take the poll's alarms and events down
            # with the local incident window: they are committed again without it (and
            # without the incident state that describes it), the window counted as failed.
            self._append_failed(Stream.INCIDENT, len(parts[Stream.INCIDENT]), exc)
            rest: dict[Stream, list[bytes]] = {
                s: p for s, p in parts.items() if s is not Stream.INCIDENT
            }
            kept = {k: v for k, v in state.items() if k not in local}
            self._commit(rest, kept, set())
            return
        if done.refused is not None:
            self._append_failed(Stream.TELEMETRY, len(parts[Stream.TELEMETRY]), done.refused)
        self._wake()

    def _append_failed(self, stream: Stream, count: int, exc: StoreError) -> None:
        self._stats.append_failures += count
        allowed, suppressed = self._log_limit.allow(f"append:{stream.wire_name}")
        if allowed:
            log.error(  # one structured line, not a traceback per poll
                kv(
                    "append_failed",
                    stream=stream.wire_name,
                    error=exc,
                    failed_total=self._stats.append_failures,
                    suppressed=suppressed,
                )
            )
        if stream is Stream.TELEMETRY and self._refusal_limit.allow("refused")[0]:
            self.flush_reports()  # the first refusal at once, then a summary a minute

    def event(self, kind: str, **fields: object) -> None:
        """Append one event record stamped with the clock now."""
        self.append(Stream.EVENT, [event_body(kind, self._clock_ms(), fields)])

    def flush_reports(self) -> None:
        """Turn the store's pending reports into events (a full disk: tried again later)."""
        try:
            if self.store.flush_reports(self._encode):
                self._wake()
        except StoreError as exc:
            self._failed("reports", exc)

    def recover(self, why: object) -> None:
        """The database went corrupt while running: recover in place, report at once."""
        log.error(kv("buffer_corrupt_detected", error=why))
        try:
            self.store.recover()
        except StoreError as exc:
            self._failed("recover", exc)
            return
        self.flush_reports()

    def _failed(self, doing: str, exc: StoreError) -> None:
        allowed, suppressed = self._log_limit.allow(f"store:{doing}")
        if allowed:
            log.error(kv("store_error", doing=doing, error=exc, suppressed=suppressed))

    async def maintain(
        self, every_s: float = MAINTAIN_EVERY_S, check_every_s: float = INTEGRITY_EVERY_S
    ) -> None:
        """Run the store's upkeep periodically (see the module invariants)."""
        since_check = 0.0
        while True:
            await asyncio.sleep(every_s)
            since_check += every_s
            if since_check >= check_every_s:
                since_check = 0.0
                try:
                    problems = await asyncio.to_thread(self.store.check_integrity)
                except StoreError as exc:
                    self._failed("integrity check", exc)
                    problems = []
                if problems:
                    self.recover("; ".join(problems[:3]))
            try:
                self.store.maintain()
            except (BufferCorruptError, BufferClosedError) as exc:  # closed: a recovery failed
                self.recover(exc)
            except StoreError as exc:
                self._failed("maintain", exc)
            self.flush_reports()
            for ev in self.store.take_evictions():
                self.event(
                    "buffer_evicted",
                    stream=ev.stream.wire_name,
                    count=ev.count,
                    first_ts=ev.first_ts,
                    last_ts=ev.last_ts,
                )
            for ev in self.store.take_shortened():  # delivered, but younger than retention
                log.warning(
                    kv("buffer_record_shortened", stream=ev.stream.wire_name, count=ev.count)
                )
                self.event(
                    "buffer_evicted",
                    stream=ev.stream.wire_name,
                    count=ev.count,
                    first_ts=ev.first_ts,
                    last_ts=ev.last_ts,
                    delivered=True,
                )
