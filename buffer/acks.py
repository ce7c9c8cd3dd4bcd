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
   leases are kept. ``settle(defer=True)`` only stages deliveries (``Core.staged``, records
   still leased): the next append writes them in its own transaction (one commit per poll,
   not two), or the next settle does (``Store.flush_settles``). Until then a power cut loses
   only the "delivered" mark: those records are sent again with the same ids.
4. Settling works on a full disk: the write releases the ballast once and retries
   (:func:`buffer.writer.with_room`); releasing is memory only.
5. Lease order: alarms, events, then telemetry, each by seq; with ``live_since_ms`` live
   telemetry (created at or after it) before the backlog, each by seq.
6. A lease after one that ran every query dry, with nothing made leasable since (the core's
   ``lease_epoch``), answers ``[]`` without a query: the forwarder asks after every PUBACK.
7. A record this process appended and has not leased yet is handed out as it was appended
   (``Core.fresh``, bounded, memory only): its row is found by the same query but not opened
   or inflated again. Every other record is authenticated from its row before it is believed.
"""

from __future__ import annotations

from collections.abc import Iterable

from buffer import settling
from buffer.core import SELECT_ROW, Core, Row
from buffer.errors import RecordAuthError
from buffer.record import Record, Stream
from buffer.writer import with_room

__all__ = ["lease", "release", "resend", "settle"]

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
                record = core.fresh.get((stream, row[2]))  # appended by this process
                if record is None:
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
    for r in records:
        core.leased.add((r.stream, r.seq))
        core.take_fresh((r.stream, r.seq))
    return records


def release(core: Core, keys: Iterable[tuple[Stream, int]] | None) -> None:
    """Give leases back (all of them when ``keys`` is None)."""
    core.lease_epoch += 1
    if keys is None:  # staged deliveries keep theirs: they were delivered
        core.leased.clear()
        core.leased.update(core.staged)
    else:
        core.leased.difference_update((Stream(s), q) for s, q in keys)


def settle(
    core: Core,
    accepted: Iterable[tuple[Stream, int]],
    rejected: Iterable[tuple[Stream, int, str]],
    *,
    defer: bool = False,
) -> None:
    ok = [(Stream(s), q) for s, q in accepted]
    bad = [(Stream(s), q, reason) for s, q, reason in rejected]
    if defer and not bad:  # written by the next append's transaction, or the next settle
        core.staged.extend(ok)
        core.leased.update(ok)  # (they are: the forwarder settles what it leased)
        return
    ok = core.staged + ok
    if not ok and not bad:
        return
    now = core.clock_ms()

    def write_all() -> settling.Changed:
        with core.transaction("settle") as conn:
            return settling.write(conn, ok, bad, now)

    settling.apply(core.counts, with_room(core, write_all))
    core.staged = []
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
