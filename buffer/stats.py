"""Plain data the store hands out (statistics, eviction reports, limits) and the one query
that computes statistics from a database (used by the store and the read-only reader)."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from buffer.record import Stream

__all__ = [
    "Eviction",
    "EvictionReason",
    "Kept",
    "StoreStats",
    "StreamLimit",
    "StreamStats",
    "query_stats",
]

EvictionReason = Literal["capacity", "retention"]


@dataclass(frozen=True, slots=True)
class StreamStats:
    """One stream's state.

    ``undelivered`` / ``delivered`` / ``dead`` / ``bytes`` count the records retained now;
    ``evicted`` (undelivered records dropped by capacity or retention), ``dead_total``
    (records ever dead-lettered) and ``quarantined`` (records ever failing authentication) are
    persistent totals that survive eviction and restarts. ``last_seq`` is the last seq ever
    assigned (0 before the first). ``oldest_undelivered_ms`` is None when nothing is pending.
    ``refused`` (persistent total) counts records refused for a full disk (never stored, no
    seq spent); ``refused_pending`` those not yet reported as ``telemetry_refused``.
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
    refused: int = 0
    refused_pending: int = 0


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
class StreamLimit:
    """One stream's limits: ``capacity_bytes`` bounds its accounted bytes (None: only the
    store's total does); ``retention_days`` overrides the store's retention (None: inherit)."""

    capacity_bytes: int | None = None
    retention_days: float | None = None

    def __post_init__(self) -> None:
        if self.capacity_bytes is not None and self.capacity_bytes <= 0:
            raise ValueError("capacity_bytes must be positive")
        if self.retention_days is not None and self.retention_days <= 0:
            raise ValueError("retention_days must be positive")


@dataclass(frozen=True, slots=True)
class Eviction:
    """Undelivered records of one stream dropped since the last report: how many, the
    creation-time span ``first_ts``..``last_ts`` (UTC epoch ms), and why."""

    stream: Stream
    count: int
    first_ts: int
    last_ts: int
    reason: EvictionReason


@dataclass(frozen=True, slots=True)
class Kept:
    """What the live store keeps in memory (buffer.core): retained records per (stream,
    state) and bytes per stream, so its stats need not scan ``records``."""

    counts: Mapping[tuple[Stream, int], int]
    stream_bytes: Mapping[Stream, int]


def query_stats(
    conn: sqlite3.Connection,
    *,
    leased: Mapping[Stream, int],
    capacity_bytes: int,
    active_key_id: int,
    key_ids: tuple[int, ...],
    kept: Kept | None = None,
) -> StoreStats:
    """A consistent snapshot: one read transaction over ``records``, ``streams`` and
    ``quarantine``. Without ``kept`` (a reader of any file) counts and bytes are summed from
    the rows, a scan of every record; with it only the oldest undelivered record of each
    stream is looked up (through the pending index: a few pages however full the buffer)."""
    counts: dict[tuple[int, int], tuple[int, int, int | None]] = {}
    started = not conn.in_transaction
    if started:
        conn.execute("BEGIN")
    try:
        if kept is None:
            for s, state, n, size, oldest in conn.execute(
                "SELECT stream, state, count(*), SUM(size), MIN(created_ms) FROM records"
                " GROUP BY stream, state"
            ):
                counts[(s, state)] = (n, size, oldest)
        else:
            for stream in Stream:
                oldest = conn.execute(  # state spelled as the partial index's literal
                    "SELECT MIN(created_ms) FROM records WHERE stream = ? AND state = 0",
                    (int(stream),),
                ).fetchone()[0]
                for state in (0, 1, 2):
                    # bytes are kept per stream only: all in one slot (the stats sum them)
                    size = kept.stream_bytes.get(stream, 0) if state == 0 else 0
                    n = kept.counts.get((stream, state), 0)
                    counts[(int(stream), state)] = (n, size, oldest if state == 0 else None)
        cols = {r[1] for r in conn.execute("PRAGMA table_info(streams)")}
        refused = "refused, refused_pending" if "refused" in cols else "0, 0"  # schema 1
        rows = conn.execute(
            f"SELECT stream, last_seq, evicted, dead, quarantined, {refused} FROM streams"  # noqa: S608
        ).fetchall()
        quarantine_rows: int = conn.execute("SELECT count(*) FROM quarantine").fetchone()[0]
    finally:
        if started:
            conn.execute("COMMIT")
    streams = {}
    for s, last, evicted, dead, quarantined, refused_total, pending in rows:
        stream = Stream(s)
        by_state = [counts.get((s, st), (0, 0, None)) for st in (0, 1, 2)]
        streams[stream] = StreamStats(
            undelivered=by_state[0][0],
            delivered=by_state[1][0],
            dead=by_state[2][0],
            leased=leased.get(stream, 0),
            bytes=sum(c[1] for c in by_state),
            last_seq=last,
            oldest_undelivered_ms=by_state[0][2],
            evicted=evicted,
            dead_total=dead,
            quarantined=quarantined,
            refused=refused_total,
            refused_pending=pending,
        )
    return StoreStats(
        streams=streams,
        bytes=sum(st.bytes for st in streams.values()),
        capacity_bytes=capacity_bytes,
        quarantine_rows=quarantine_rows,
        active_key_id=active_key_id,
        key_ids=key_ids,
    )
