"""Writing records: one append is one transaction holding its evictions, its rows and the
stream's new last seq (an append of several streams, e.g. one device poll's alarms, telemetry
and incident records, is one transaction too); and the accounting of telemetry that was
refused.

Invariants:
1. Covered, then written: the seqs of an append are reserved in the seq ledger (fsynced)
   before the transaction that writes them, so no seq is ever written that the ledger does
   not cover (see :mod:`buffer.ledger`).
2. All or nothing: evictions made for room, the inserted rows, ``streams.last_seq`` and the
   key's seal count commit together. A failed append stored nothing and moved ``last_seq``
   not at all (its reserved seqs are used by the next append: none of them was ever written).
   A batch of several streams commits whole, except that refused telemetry (invariant 4) is
   left out of it and the rest committed.
3. Eviction order: delivered and dead records first (oldest first), then undelivered telemetry
   by seq; undelivered alarms and events are never evicted (the store may then exceed its
   capacity). Every undelivered drop is counted and reported.
4. Refusal is a record of its own: a telemetry append refused for the reserve (or by a genuine
   SQLITE_FULL) stores nothing and spends no seq, but is summed per stream in the database
   (``refused`` total, and a pending summary that becomes one ``telemetry_refused`` report);
   while even that small write fails it is kept in memory and written with the next one.
5. Alarms and events get the reserve: their appends (and every other write but a telemetry
   append) meet a full disk by releasing the ballast once and retrying (:func:`with_room`).
6. State rows given with an append (:mod:`buffer.kvstate`) commit in the append's transaction
   and are counted in the key's seals; an append of no payloads stores no state either.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from buffer import crypto, kvstate, settling
from buffer.core import ROW_OVERHEAD, Candidate, Core
from buffer.errors import BufferFullError, StoreError, from_os_error
from buffer.record import Record, Stream

__all__ = ["ROOM_FRESH_S", "ROOM_SLACK", "Appended", "append", "append_batch", "evict", "with_room"]

_T = TypeVar("_T")
_CHUNK = 512
ROOM_FRESH_S = 5.0
"""How long a room measurement may be reused for telemetry appends (:func:`_check_room`):
longer than a 1 s poll period, or every such poll would measure (0.4 ms of its ~6 ms)."""
ROOM_SLACK = 64 << 20
"""Room beyond the reserve below which every telemetry append measures again."""


def with_room(core: Core, doing: Callable[[], _T]) -> _T:
    """Run ``doing``; on a full disk release the ballast once and run it again."""
    try:
        return doing()
    except BufferFullError:
        if not core.ballast.release():
            raise
        return doing()


@dataclass(frozen=True, slots=True)
class Appended:
    """What one :func:`append_batch` stored: each stream's new seqs (consecutive), and
    ``refused``: the telemetry refused (invariant 4) while the rest of the batch committed."""

    seqs: dict[Stream, list[int]]
    refused: BufferFullError | None = None


@dataclass(slots=True)
class _Sealed:
    rows: list[tuple[Stream, int, int, int, bytes, bytes, int]]
    incoming: int
    last: int
    records: list[Record]  # as appended, for Core.fresh (forwarded streams only)


def append(
    core: Core,
    stream: Stream,
    payloads: Sequence[bytes],
    created_ms: int | None,
    also: Callable[[sqlite3.Connection], None] | None = None,
    state: Mapping[str, bytes] | None = None,
) -> list[int]:
    """Seal and store ``payloads`` (see the module invariants); ``also`` runs inside the same
    transaction (used to clear the reports these payloads describe); ``state`` values are
    stored in it too (invariant 6)."""
    return append_batch(core, {stream: payloads}, created_ms, also, state).seqs.get(stream, [])


def append_batch(
    core: Core,
    parts: Mapping[Stream, Sequence[bytes]],
    created_ms: int | None,
    also: Callable[[sqlite3.Connection], None] | None = None,
    state: Mapping[str, bytes] | None = None,
) -> Appended:
    """Seal and store the payloads of several streams in one transaction (invariants 1-6 per
    stream; alarms present make the commit durable). Telemetry refused for the reserve or by
    a full disk is left out (counted) and the rest committed without it: then ``refused``
    says so. Raises when nothing was stored (a telemetry-only batch refused included)."""
    conn = core.live()
    wanted = {s: p for s, p in sorted(parts.items()) if p}
    if not wanted:
        return Appended({})
    created = core.clock_ms() if created_ms is None else created_ms
    sealed = {s: _seal(core, s, p, created) for s, p in wanted.items()}
    state_rows = kvstate.seal(core, state, created) if state else []
    tele = sealed.get(Stream.TELEMETRY)
    refused: BufferFullError | None = None
    if tele is not None:
        try:
            _check_room(core, tele.incoming)
            return Appended(_commit(core, conn, sealed, also, state_rows))
        except BufferFullError as exc:
            _note_refusal(core, Stream.TELEMETRY, len(tele.rows), created, "disk_full")
            if len(sealed) == 1:
                raise
            refused = exc
            del sealed[Stream.TELEMETRY]
    seqs = with_room(core, lambda: _commit(core, conn, sealed, also, state_rows))
    return Appended(seqs, refused)


def _seal(core: Core, stream: Stream, payloads: Sequence[bytes], created: int) -> _Sealed:
    key = core.keys.active
    first = core.last_seq[stream] + 1
    rows = []
    records = []
    incoming = 0
    for seq, payload in enumerate(payloads, start=first):
        aad = crypto.associated_data(core.gateway, stream, seq, created, key.id)
        packed = crypto.pack(payload)
        nonce, sealed = key.seal(packed, aad)
        size = len(nonce) + len(sealed) + ROW_OVERHEAD
        rows.append((stream, seq, created, key.id, nonce, sealed, size))
        incoming += size
        if stream.forwarded:
            body = crypto.unpack_lazy(packed)  # the deflated form as a lease hands it out
            deflated = None if isinstance(body, bytes) else body
            records.append(Record(stream, seq, created, payload, deflated=deflated))
    return _Sealed(rows, incoming, first + len(payloads) - 1, records)


def _commit(
    core: Core,
    conn: sqlite3.Connection,
    parts: Mapping[Stream, _Sealed],
    also: Callable[[sqlite3.Connection], None] | None,
    state_rows: list[kvstate.StateRow],
) -> dict[Stream, list[int]]:
    key_id = next(iter(parts.values())).rows[0][3]
    seals = sum(len(p.rows) for p in parts.values()) + len(state_rows)
    for stream, part in parts.items():
        try:
            core.ledger.reserve(stream, part.last)
        except OSError as exc:
            raise from_os_error(exc, f"{core.ledger.path}: reserving seqs") from exc
    evicted: list[Candidate] = []
    durable = Stream.ALARM in parts
    incoming = sum(p.incoming for p in parts.values())
    staged = core.staged  # deliveries taken since the last write ride along (acks.settle)
    settled: settling.Changed = {}
    with core.transaction("append", durable=durable):
        if staged:
            settled = settling.write(conn, staged, [], core.clock_ms())
        for stream, part in parts.items():
            cap = core.stream_capacity[stream]
            over = core.stream_bytes[stream] + part.incoming - (cap or 0)
            if cap is not None and over > 0:
                evicted += evict(core, conn, over, stream)
        overflow = core.bytes - sum(v[4] for v in evicted) + incoming - core.capacity
        if overflow > 0:
            evicted += evict(core, conn, overflow, None)
        conn.executemany(
            "INSERT INTO records(stream, seq, created_ms, key_id, nonce, sealed, size)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [row for p in parts.values() for row in p.rows],
        )
        conn.executemany(
            "UPDATE streams SET last_seq = ? WHERE stream = ?",
            [(p.last, stream) for stream, p in parts.items()],
        )
        if state_rows:
            kvstate.write(conn, state_rows)
        core.keys.count_seals(conn, key_id, seals)
        if also is not None:
            also(conn)
    if staged:
        settling.apply(core.counts, settled)
        core.leased.difference_update(staged)
        core.staged = []
    for stream, part in parts.items():
        core.last_seq[stream] = part.last
        core.stream_bytes[stream] += part.incoming
        core.counted(stream, settling.PENDING, len(part.rows))
        core.remember(part.records)
    if durable:
        core.committed_durably()
    core.bytes += incoming
    core.written += incoming
    core.forget(evicted, "capacity")
    core.keys.after_commit(key_id, seals)
    return {stream: [r[1] for r in p.rows] for stream, p in parts.items()}


def _check_room(core: Core, incoming: int) -> None:
    """Refuse a telemetry append that would eat into the reserve (see :mod:`buffer.space`).

    Measuring the room (five PRAGMAs, a stat and a statvfs) costs more than the append, so a
    measurement is reused, less what was appended since, while it is younger than
    :data:`ROOM_FRESH_S` and leaves more than :data:`ROOM_SLACK` above the reserve: only space
    another process takes in those seconds goes unseen, and never near the reserve (where
    every append measures), and the ballast keeps the reserve for alarms whatever happens."""
    now = core.monotonic()
    seen = core.room_seen
    if seen is not None and now - seen[0] < ROOM_FRESH_S:
        room, since = seen[1], core.written - seen[2]
        held = core.ballast.held if room.disk_bound else 0
        keep = max(core.reserve - held, core.reserve // 4)
        if room.total - 2 * (since + incoming) >= keep + ROOM_SLACK:
            return
    room = core.room()
    core.room_seen = (now, room, core.written)
    held = core.ballast.held if room.disk_bound else 0
    keep = max(core.reserve - held, core.reserve // 4)
    if room.total - 2 * incoming < keep:
        raise BufferFullError(
            f"telemetry refused: {room.total} bytes of room left and the last {keep} "
            "are kept for alarms and events; free disk space or lower the buffer's capacity"
        )


def _note_refusal(core: Core, stream: Stream, count: int, created: int, reason: str) -> None:
    n, first, last, _ = core.unsaved_refusals.get(stream, (0, created, created, reason))
    pending = (n + count, min(first, created), max(last, created), reason)
    try:
        with core.transaction("counting a refusal") as conn:
            conn.execute(
                "UPDATE streams SET refused = refused + ?1, refused_pending = refused_pending + ?1,"
                " refused_first_ms = min(coalesce(refused_first_ms, ?2), ?2),"
                " refused_last_ms = max(coalesce(refused_last_ms, ?3), ?3), refused_reason = ?4"
                " WHERE stream = ?5",
                (*pending, stream),
            )
    except StoreError:  # the disk is too full even for this: keep it for the next attempt
        core.unsaved_refusals[stream] = pending
        return
    core.unsaved_refusals.pop(stream, None)


def evict(
    core: Core,
    conn: sqlite3.Connection,
    need: int,
    stream: Stream | None,
    *,
    delivered_only: bool = False,
) -> list[Candidate]:
    """Inside a transaction: delete delivered/dead records oldest first, then undelivered
    telemetry by seq (invariant 3), until ``need`` bytes are freed or nothing evictable is
    left; only records of ``stream`` unless it is None."""
    which = None if stream is None else int(stream)
    queries = [
        "SELECT id, stream, seq, created_ms, size, state FROM records"
        " WHERE state <> 0 AND (?1 IS NULL OR stream = ?1) ORDER BY created_ms, id LIMIT ?2"
    ]
    if not delivered_only and stream in (None, Stream.TELEMETRY):
        queries.append(
            "SELECT id, stream, seq, created_ms, size, state FROM records"
            " WHERE stream = 2 AND state = 0 ORDER BY seq LIMIT ?2"  # ?1 unused
        )
    evicted: list[Candidate] = []
    freed = 0
    for query in queries:
        while freed < need:
            batch = conn.execute(query, (which, _CHUNK)).fetchall()
            if not batch:
                break
            take = []
            for cand in batch:
                take.append(cand)
                freed += cand[4]
                if freed >= need:
                    break
            core.delete(conn, take)
            evicted.extend(take)
    return evicted
