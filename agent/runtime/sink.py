"""Appending records to the store: the durability point, with failures counted, not raised;
and the store's upkeep: maintenance, its reports as events, corruption found while running.

Invariants: the store is touched only from the event loop thread (the integrity check runs in
a worker thread on its own read-only connection); a refused append (full disk, I/O error) is
counted in ``stats.append_failures`` always and logged at most once a minute per stream (a
full disk fails every poll); every successful append sets ``wake`` so the forwarder does not
wait for its idle timeout; the store's reports (``seq_gap``, ``telemetry_refused``,
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
from collections.abc import Callable
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

    def append(self, stream: Stream, payloads: list[bytes]) -> None:
        try:
            self.store.append(stream, payloads)
        except StoreError as exc:
            self._stats.append_failures += len(payloads)
            allowed, suppressed = self._log_limit.allow(f"append:{stream.wire_name}")
            if allowed:
                log.error(  # noqa: TRY400 - one structured line, not a traceback per poll
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
            return
        self._wake()

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
