"""Handing records out and taking the broker's answers back: lease, release, settle, resend.

Invariants:
1. Durable before leased: :func:`lease` and :func:`resend` first make every commit durable
   (one WAL fsync per forward batch, only when something was committed since the last one),
   so a record the platform may have acknowledged can never be rolled back by a power cut
   and reappear under its seq with other content. ``lease(sync=False)`` makes no fsync: it
   hands out only records already durable (seq at or below ``Core.durable``; the caller syncs
   off its thread with :class:`buffer.core.WalSync`), the rest stay for a later lease.
2. A record is handed out by ``lease`` at most once until it is released or settled; leases
   live in memory only, so after a restart every unsettled record is leased again
   (at-least-once, same id).
3. Nothing deleted when acknowledged: ``settle`` marks records delivered (or dead with the
   broker's reason); they stay until retention or capacity removes them. The time a run of
   records was delivered is one ``settled`` row (buffer/schema.py), not a column of each.
   Only undelivered records change state. One transaction: on failure nothing changed and the
   leases are kept.
4. Settling works on a full disk: the write releases the ballast once and retries
   (:func:`buffer.writer.with_room`); releasing is memory only.
5. Lease order: alarms, events, then telemetry, each by seq; with ``live_since_ms`` live
   telemetry (created at or after it) before the backlog, each by seq.
6. A lease after one that ran every query dry, with nothing made leasable since (the core's
   ``lease_epoch``), answers ``[]`` without a query: the forwarder asks after every PUBACK.
"""

from __future__ import annotations

from collections.abc import Iterable

from buffer.core import DEAD, DELIVERED, PENDING, SELECT_ROW, Core, Row
from buffer.errors import RecordAuthError
from buffer.record import Record, Stream
from buffer.writer import with_room

__all__ = ["lease", "release", "resend", "seq_runs", "settle"]

_CHUNK = 512
# Lease queries. SQL text spells states and Stream.TELEMETRY = 2 as literals: SQLite uses a
# partial index only when the query's WHERE names the same literal as the index's WHERE. Live
# telemetry is found through records_pending_age (the rows of the last seconds, few) and
# sorted by seq; the backlog is walked along records_pending.
_LEASE_ALARM = SELECT_ROW + " WHERE stream = 0 AND state = 0 AND seq > ? ORDER BY seq LIMIT ?"
_LEASE_EVENT = SELECT_ROW + " WHERE stream = 1 AND state = 0 AND seq > ? ORDER BY seq LIMIT ?"
_LEASE_TELEMETRY = SELECT_ROW + " WHERE stream = 2 AND state = 0 AND seq > ? ORDER BY seq LIMIT ?"
_LEASE_LIVE = (
    SELECT_ROW + " INDEXED BY records_pending_age"
    " WHERE stream = 2 AND state = 0 AND created_ms >= ? AND seq > ? ORDER BY seq LIMIT ?"
)
_LEASE_BACKLOG = (
    SELECT_ROW + " INDEXED BY records_pending"
    " WHERE stream = 2 AND state = 0 AND created_ms < ? AND seq > ? ORDER BY seq LIMIT ?"
)


def seq_runs(keys: Iterable[tuple[Stream, int]]) -> list[tuple[int, int, int]]:
    """``(stream, first, last)`` for each run of consecutive seqs among ``keys``."""
    runs: list[list[int]] = []
    for stream, seq in sorted({(int(s), q) for s, q in keys}):
        last = runs[-1] if runs else None
        if last is not None and last[0] == stream and last[2] + 1 == seq:
            last[2] = seq
        else:
            runs.append([stream, seq, seq])
    return [(s, lo, hi) for s, lo, hi in runs]


def _lease_order(live_since_ms: int | None) -> list[tuple[Stream, str, int | None]]:
    """(stream, query, bound) in lease order; each query takes ([bound,] after_seq, limit)."""
    order: list[tuple[Stream, str, int | None]] = [
        (Stream.ALARM, _LEASE_ALARM, None),
        (Stream.EVENT, _LEASE_EVENT, None),
    ]
    if live_since_ms is None:
        order.append((Stream.TELEMETRY, _LEASE_TELEMETRY, None))
    else:
        order.append((Stream.TELEMETRY, _LEASE_LIVE, live_since_ms))
        order.append((Stream.TELEMETRY, _LEASE_BACKLOG, live_since_ms))
    return order


def lease(
    core: Core, max_count: int, max_bytes: int, live_since_ms: int | None, *, sync: bool = True
) -> list[Record]:
    conn = core.live()
    if max_count < 1 or max_bytes < 1:
        raise ValueError("max_count and max_bytes must be positive")
    if sync and core.needs_sync():
        core.sync()
    if core.exhausted_epoch == core.lease_epoch:  # nothing became leasable since: no query
        return []
    out: list[Record] = []
    total = 0
    bad: list[tuple[Row, str]] = []
    for stream, query, bound in _lease_order(live_since_ms):
        after = 0
        durable = core.durable[stream]  # by seq: past it, nothing of this query is durable
        while len(out) < max_count and after < durable:
            limit = min(max_count - len(out) + len(core.leased), _CHUNK)
            args = (after, limit) if bound is None else (bound, after, limit)
            batch = conn.execute(query, args).fetchall()
            core.lease_queries += 1
            if not batch:
                break
            for row in batch:
                after = row[2]
                if after > durable:
                    break
                if (stream, row[2]) in core.leased:
                    continue
                try:
                    record = core.unseal(row)
                except RecordAuthError as exc:
                    bad.append((row, str(exc)))
                    continue
                if out and total + record.size > max_bytes:
                    core.quarantine(bad)
                    return _take(core, out)
                out.append(record)
                total += record.size
                if len(out) >= max_count:
                    break
    if len(out) < max_count:  # every query ran dry: all that is leasable now is handed out
        core.exhausted_epoch = core.lease_epoch
    core.quarantine(bad)
    return _take(core, out)


def _take(core: Core, records: list[Record]) -> list[Record]:
    core.leased.update((r.stream, r.seq) for r in records)
    return records


def release(core: Core, keys: Iterable[tuple[Stream, int]] | None) -> None:
    """Give leases back (all of them when ``keys`` is None)."""
    core.lease_epoch += 1
    if keys is None:
        core.leased.clear()
    else:
        core.leased.difference_update((Stream(s), q) for s, q in keys)


def settle(
    core: Core,
    accepted: Iterable[tuple[Stream, int]],
    rejected: Iterable[tuple[Stream, int, str]],
) -> None:
    ok = [(Stream(s), q) for s, q in accepted]
    bad = [(Stream(s), q, reason) for s, q, reason in rejected]
    if not ok and not bad:
        return
    now = core.clock_ms()

    runs = seq_runs(ok)

    def write() -> None:
        with core.transaction("settle") as conn:
            # PUBACKs come back mostly in seq order: one statement per run of consecutive seqs.
            # Only ``state`` changes: a row of the same size is rewritten in place, the sealed
            # payload's overflow pages untouched (a settled_ms in the row would grow it, and
            # SQLite would write the whole record again); the time goes to ``settled``.
            conn.executemany(
                "UPDATE records SET state = ?"
                " WHERE stream = ? AND seq BETWEEN ? AND ? AND state = ?",
                [(DELIVERED, s, lo, hi, PENDING) for s, lo, hi in runs],
            )
            conn.executemany(
                "INSERT OR REPLACE INTO settled(stream, first_seq, last_seq, settled_ms)"
                " VALUES (?, ?, ?, ?)",
                [(s, lo, hi, now) for s, lo, hi in runs],
            )
            for s in {s for s, _, _ in runs}:  # ranges of records retention already removed
                conn.execute(
                    "DELETE FROM settled WHERE stream = ?1 AND last_seq <"
                    " (SELECT min(seq) FROM records WHERE stream = ?1)",
                    (s,),
                )
            for s, q, reason in bad:
                cur = conn.execute(
                    "UPDATE records SET state = ?, reason = ?, settled_ms = ?"
                    " WHERE stream = ? AND seq = ? AND state = ?",
                    (DEAD, reason, now, s, q, PENDING),
                )
                if cur.rowcount:
                    conn.execute("UPDATE streams SET dead = dead + 1 WHERE stream = ?", (s,))

    with_room(core, write)
    core.leased.difference_update(ok)
    core.leased.difference_update((s, q) for s, q, _ in bad)


def resend(core: Core, stream: Stream, from_seq: int, to_seq: int) -> list[Record]:
    conn = core.live()
    if core.needs_sync():
        core.sync()
    rows = conn.execute(
        SELECT_ROW + " WHERE stream = ? AND seq BETWEEN ? AND ? ORDER BY seq",
        (Stream(stream), from_seq, to_seq),
    ).fetchall()
    out, bad = core.unseal_all(rows)
    core.quarantine(bad)
    return out
