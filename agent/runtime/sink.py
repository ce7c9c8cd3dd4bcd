"""Appending records to the store: the durability point, with failures counted, not raised.

Invariants: the store is touched only from the event loop thread; a refused append (full disk,
I/O error) is counted in ``stats.append_failures`` always and logged at most once a minute per
stream (a full disk fails every poll); every successful append sets ``wake`` so the forwarder
does not wait for its idle timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Final

from agent.codec import event_body
from agent.logs import RateLimiter, kv
from agent.runtime.stats import RuntimeStats
from buffer import BufferError as StoreError
from buffer import Store
from buffer.record import Stream

__all__ = ["MAINTAIN_EVERY_S", "RecordSink"]

log = logging.getLogger("safeedge.pipeline")

MAINTAIN_EVERY_S: Final = 60.0


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

    def append(
        self, stream: Stream, payloads: list[bytes], *, state: Mapping[str, bytes] | None = None
    ) -> None:
        """Append ``payloads`` (and ``state``, in the same transaction: see Store.append)."""
        try:
            self.store.append(stream, payloads, state=state)
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
            return
        self._wake()

    def event(self, kind: str, **fields: object) -> None:
        """Append one event record stamped with the clock now."""
        self.append(Stream.EVENT, [event_body(kind, self._clock_ms(), fields)])

    async def maintain(self, every_s: float = MAINTAIN_EVERY_S) -> None:
        """Run the store's retention and capacity pass periodically; report evictions."""
        while True:
            await asyncio.sleep(every_s)
            self.store.maintain()
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
