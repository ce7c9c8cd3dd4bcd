"""Store-and-forward: moves records from the buffer to the uplink and settles them on PUBACK.

Invariants:
- a record is settled as delivered only after the broker acknowledged it (PUBACK with a success
  reason code); a negative PUBACK dead-letters it with the reason; a publish lost to a disconnect
  is released back to the buffer and leased again later (at-least-once, same id);
- records are leased alarm first, then event, then telemetry, FIFO within a stream (the store's
  order), and published in that order;
- the forwarder runs on the agent's event loop thread, the only thread that touches the store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agent.codec import encode_envelope
from agent.uplink import Uplink
from buffer import Store
from buffer.record import Stream

__all__ = ["Forwarder", "ForwarderStats"]

_MAX_LEASE_BYTES = 4 << 20


@dataclass(slots=True)
class ForwarderStats:
    published: int = 0
    delivered: int = 0
    rejected: int = 0
    lost: int = 0


class Forwarder:
    """One non-blocking :meth:`pump` step at a time; the pipeline calls it when woken."""

    def __init__(
        self,
        *,
        store: Store,
        uplink: Uplink,
        site: str,
        gateway: str,
        backfill_after_s: float,
        max_inflight: int,
        clock_ms: Callable[[], int],
    ) -> None:
        self._store = store
        self._uplink = uplink
        self._site = site
        self._gateway = gateway
        self._backfill_after_ms = int(backfill_after_s * 1000)
        self._max_inflight = max_inflight
        self._clock_ms = clock_ms
        self.stats = ForwarderStats()

    def settle_results(self) -> int:
        """Apply the broker's answers to the store; returns how many were handled."""
        results = self._uplink.take_results()
        if not results:
            return 0
        accepted: list[tuple[Stream, int]] = []
        rejected: list[tuple[Stream, int, str]] = []
        lost: list[tuple[Stream, int]] = []
        for result in results:
            stream, seq = result.token
            if result.accepted:
                accepted.append((stream, seq))
            elif result.lost:
                lost.append((stream, seq))
            else:
                rejected.append((stream, seq, result.reason))
        if accepted or rejected:
            self._store.settle(accepted=accepted, rejected=rejected)
        if lost:
            self._store.release(lost)
        self.stats.delivered += len(accepted)
        self.stats.rejected += len(rejected)
        self.stats.lost += len(lost)
        return len(results)

    def publish_pending(self) -> int:
        """Lease what the in-flight window allows and publish it; returns how many were sent."""
        if not self._uplink.connected:
            return 0
        budget = self._max_inflight - self._uplink.inflight
        if budget <= 0:
            return 0
        records = self._store.lease(max_count=budget, max_bytes=_MAX_LEASE_BYTES)
        now = self._clock_ms()
        sent = 0
        for i, record in enumerate(records):
            stream = record.stream.wire_name
            envelope = encode_envelope(
                site=self._site,
                gateway=self._gateway,
                stream=stream,
                seq=record.seq,
                ts_ms=record.created_ms,
                backfill=now - record.created_ms > self._backfill_after_ms,
                body=record.payload,
            )
            if not self._uplink.publish(stream, envelope, token=(record.stream, record.seq)):
                # Disconnected between lease and publish: hand the rest back untouched.
                self._store.release((r.stream, r.seq) for r in records[i:])
                break
            sent += 1
        self.stats.published += sent
        return sent

    def pump(self) -> int:
        """Settle answers, then publish; returns the amount of work done (0 when idle)."""
        return self.settle_results() + self.publish_pending()

    @property
    def idle(self) -> bool:
        """Nothing in flight (the uplink has answered everything it was given)."""
        return self._uplink.inflight == 0
