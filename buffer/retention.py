"""Housekeeping: retention, capacities, room for a full disk, the ballast, the seq ledger's
watermarks, key pruning, and the integrity check that finds corruption while running.

Invariants:
1. Retention is per stream: delivered and dead records older than it are deleted (not a
   drop); undelivered telemetry older than it is evicted (counted, reported); undelivered
   alarms and events are kept until delivered, whatever their age. A stream the uplink never
   carries (``incident``) is a local record only: its records go when they are older than the
   retention, like delivered ones.
2. Capacities are enforced as the writer does (:func:`buffer.writer.evict`).
3. While room is short of twice the reserve, delivered records are deleted oldest first (not
   a drop) and their pages returned to the file system; then the ballast is allocated again
   if the disk has room for it (see :mod:`buffer.space`). Every delete works on a full disk
   (ballast released once, then retried).
4. Short transactions: appends are never blocked for long.
5. The ledger's ``durable`` and ``low`` watermarks are refreshed (one fsync of the WAL, one of
   the ledger) when they moved, so a later loss is bounded as tightly as possible.
6. :func:`check_integrity` uses its own read-only connection, so it may run in a worker
   thread while the store's thread goes on; it changes nothing.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from buffer.core import Candidate, Core
from buffer.errors import BufferCorruptError, from_os_error, from_sqlite
from buffer.record import Stream
from buffer.stats import EvictionReason
from buffer.writer import evict, with_room

__all__ = ["check_integrity", "maintain", "refresh_ledger", "write_ledger"]

_CHUNK = 512
_SETTLED_OLD = (
    "SELECT id, stream, seq, created_ms, size, state FROM records"
    " WHERE state <> 0 AND stream = ? AND created_ms < ? ORDER BY created_ms LIMIT ?"
)
_LOCAL_OLD = (  # a stream the uplink never carries (incidents): its records are never delivered
    "SELECT id, stream, seq, created_ms, size, state FROM records"
    " WHERE state = 0 AND stream = ? AND created_ms < ? ORDER BY created_ms LIMIT ?"
)
_PENDING_OLD = (
    "SELECT id, stream, seq, created_ms, size, state FROM records"
    " WHERE stream = 2 AND state = 0 AND stream = ? AND created_ms < ? ORDER BY created_ms LIMIT ?"
)


def _delete_in_chunks(
    core: Core, query: str, stream: Stream, cutoff: int, reason: EvictionReason | None
) -> None:
    while True:

        def chunk() -> list[Candidate]:
            with core.transaction("retention") as conn:
                victims: list[Candidate] = conn.execute(query, (stream, cutoff, _CHUNK)).fetchall()
                core.delete(conn, victims)
            return victims

        victims = with_room(core, chunk)
        core.forget(victims, reason)
        if len(victims) < _CHUNK:
            return


def _evict(core: Core, need: int, stream: Stream | None, *, delivered_only: bool = False) -> None:
    def run() -> list[Candidate]:
        with core.transaction("capacity") as conn:
            return evict(core, conn, need, stream, delivered_only=delivered_only)

    core.forget(with_room(core, run), None if delivered_only else "capacity")


def _free_room(core: Core, need: int) -> None:
    """Delete delivered records in small transactions, checkpointing after each: on a full
    disk each delete then reuses the WAL's existing frames instead of growing the WAL."""
    conn = core.live()
    freed = 0
    while freed < need:
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as exc:
            raise from_sqlite(exc, "checkpointing while freeing room") from exc

        def run(chunk: int = min(need - freed, 16 * 4096)) -> list[Candidate]:
            with core.transaction("freeing room") as tx:
                return evict(core, tx, chunk, None, delivered_only=True)

        victims = with_room(core, run)
        core.forget(victims, None)
        if not victims:
            return
        freed += sum(v[4] for v in victims)


def maintain(core: Core) -> None:
    conn = core.live()
    now = core.clock_ms()
    for stream in Stream:
        cutoff = now - core.retention_ms[stream]
        _delete_in_chunks(core, _SETTLED_OLD, stream, cutoff, None)
        if stream is Stream.TELEMETRY:
            _delete_in_chunks(core, _PENDING_OLD, stream, cutoff, "retention")
        if not stream.forwarded:  # the local record has served its retention: not a drop
            _delete_in_chunks(core, _LOCAL_OLD, stream, cutoff, None)

        def old_quarantine(s: Stream = stream, c: int = cutoff) -> None:
            with core.transaction("retention") as tx:
                tx.execute("DELETE FROM quarantine WHERE stream = ? AND created_ms < ?", (s, c))

        with_room(core, old_quarantine)
        cap = core.stream_capacity[stream]
        if cap is not None and core.stream_bytes[stream] > cap:
            _evict(core, core.stream_bytes[stream] - cap, stream)
    if core.bytes > core.capacity:
        _evict(core, core.bytes - core.capacity, None)
    short = 2 * core.reserve - core.room().total
    if short > 0:
        _free_room(core, short)
    try:
        core.keys.prune(conn)
        conn.execute("PRAGMA incremental_vacuum")
        if short > 0:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")  # the vacuum's truncation lands
    except sqlite3.Error as exc:
        raise from_sqlite(exc, "maintenance") from exc
    core.ballast.restore(core.room().fs_free)
    refresh_ledger(core)


def refresh_ledger(core: Core, *, clean: bool = False) -> None:
    """Write the ledger's watermarks if they moved (invariant 5); with ``clean`` (on close,
    after the database was checkpointed) the ceilings become the exact last seqs."""
    conn = core.live()
    if core.needs_sync():
        core.sync()
    changed = clean or core.ledger.clean
    for stream, mark in core.ledger.marks.items():
        row = conn.execute(
            "SELECT min(seq) FROM records WHERE stream = ? AND state = 0", (stream,)
        ).fetchone()
        low = row[0] if row[0] is not None else core.last_seq[stream] + 1
        durable = core.durable[stream]
        if (low, durable) != (mark.low, mark.durable):
            mark.low, mark.durable = low, durable
            changed = True
        if clean:
            mark.reserved = core.last_seq[stream]
    if not changed:
        return
    core.ledger.clean = clean
    with_room(core, lambda: write_ledger(core))


def write_ledger(core: Core) -> None:
    try:
        core.ledger.write()
    except OSError as exc:
        raise from_os_error(exc, f"{core.ledger.path}: writing the seq ledger") from exc


def check_integrity(path: Path) -> list[str]:
    """``PRAGMA quick_check`` on a separate read-only connection: ``[]`` when the database is
    sound, else SQLite's complaints (at most 10). Raises nothing for corruption (that is the
    answer); I/O errors are translated."""
    try:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise from_sqlite(exc, f"{path}: opening for the integrity check") from exc
    try:
        rows = [str(r[0]) for r in conn.execute("PRAGMA quick_check(10)")]
    except sqlite3.DatabaseError as exc:
        err = from_sqlite(exc, "integrity check")
        if isinstance(err, BufferCorruptError):
            return [str(exc)]
        raise err from exc
    finally:
        conn.close()
    return [] if rows == ["ok"] else rows
