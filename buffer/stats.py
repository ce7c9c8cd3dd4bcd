"""Plain data the store hands out: statistics and eviction reports."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from buffer.record import Stream

__all__ = ["Eviction", "EvictionReason", "StoreStats", "StreamStats"]

EvictionReason = Literal["capacity", "retention"]


@dataclass(frozen=True, slots=True)
class StreamStats:
    """One stream's state.

    ``undelivered`` / ``delivered`` / ``dead`` / ``bytes`` count the records retained now;
    ``evicted`` (undelivered records dropped by capacity or retention), ``dead_total``
    (records ever dead-lettered) and ``quarantined`` (records ever failing authentication) are
    persistent totals that survive eviction and restarts. ``last_seq`` is the last seq ever
    assigned (0 before the first). ``oldest_undelivered_ms`` is None when nothing is pending.
    """

    undelivered: int
    delivered: int
    dead: int
    leased: int
    bytes: int
    last_seq: int
    oldest_undelivered_ms: int | None
    evicted: int
    dead_total: int
    quarantined: int


@dataclass(frozen=True, slots=True)
class StoreStats:
    """The whole store: per stream, plus totals. ``bytes`` is the accounted size of retained
    records (sealed bytes + nonce + a fixed per-row overhead), the figure ``capacity_bytes``
    bounds; ``quarantine_rows`` is how many quarantined records are still kept."""

    streams: Mapping[Stream, StreamStats]
    bytes: int
    capacity_bytes: int
    quarantine_rows: int
    active_key_id: int
    key_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Eviction:
    """Undelivered records of one stream dropped since the last report: how many, the
    creation-time span ``first_ts``..``last_ts`` (UTC epoch ms), and why."""

    stream: Stream
    count: int
    first_ts: int
    last_ts: int
    reason: EvictionReason
