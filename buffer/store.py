"""The encrypted store-and-forward buffer.

Invariants:
1. Durable before acknowledged: ``append`` returns only after its single transaction committed
   (alarm appends with ``synchronous=FULL``, so they survive a power cut; others with NORMAL,
   which survives a process crash). A failed append stored nothing and consumed no seq.
2. Seqs are per stream, start at 1, and are never reused: the last seq lives in ``streams``,
   advanced in the same transaction as the rows it names, never lowered by eviction, restart or
   key rotation.
3. Nothing deleted before acknowledged: ``settle(accepted=...)`` marks records delivered; they
   stay (the site's local record, and ``resend``) until retention or capacity removes them.
4. Every drop is counted: undelivered records removed by capacity or retention are counted per
   stream (persistently) and reported by :meth:`Store.take_evictions`; rejected records are
   dead-lettered with their reason and counted; records failing authentication are moved to
   ``quarantine`` and counted. Undelivered alarms and events are never evicted; only
   undelivered telemetry is, oldest first, and only after every delivered or dead record
   (of the stream over its own capacity, or of any stream for the store's total capacity).
   Retention is per stream (:class:`StreamLimit`).
7. A full disk never locks alarms out: a telemetry append that would leave less than
   ``reserve_bytes`` of room (see :mod:`buffer.space`) is refused with ``BufferFullError``
   before anything is written; alarms and events may use the reserve. ``maintain`` frees
   delivered records while room is short. A genuine SQLITE_FULL rolls the append back and
   raises ``BufferFullError``; the store stays usable.
5. Leases live in memory only: a record is handed out by ``lease`` at most once until it is
   released or settled; after a restart every unsettled record is leased again (at-least-once).
6. The database never holds a plaintext payload (see :mod:`buffer.crypto`).
8. State written with an append is in the append's transaction: ``append(..., state={key:
   bytes})`` stores the records and the (opaque, sealed) state values together or not at all,
   so a caller's persisted state never disagrees with the records it wrote. ``state(key)``
   reads one back; the store never interprets the bytes (``b""`` is a value, not a delete).

Threading: a Store is used from one thread only (the agent's event loop thread); the SQLite
connection refuses use from another thread. One process at a time: ``<db>.lock`` is held with
``flock`` while the store is open.

On-disk format: :mod:`buffer.schema` (database) and :mod:`buffer.crypto` (key file, sealing).
Capacity counts ``len(nonce) + len(sealed) + 64`` bytes per record, not the file size; SQLite
reuses freed pages and ``maintain`` returns free pages to the file system.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

from buffer import crypto
from buffer.errors import (
    BufferClosedError,
    BufferFullError,
    BufferInUseError,
    BufferMismatchError,
    RecordAuthError,
    from_os_error,
    from_sqlite,
)
from buffer.keyring import KeyRing
from buffer.record import Record, Stream
from buffer.schema import open_database
from buffer.space import room_bytes
from buffer.stats import Eviction, EvictionReason, StoreStats, StreamLimit, query_stats

__all__ = ["Store", "record_id"]

# Record states. SQL text spells them (and Stream.TELEMETRY = 2) as literals: SQLite uses a
# partial index only when the query's WHERE names the same literal as the index's WHERE.
_PENDING, _DELIVERED, _DEAD = 0, 1, 2
_ROW_OVERHEAD = 64
_CHUNK = 512
_MS_PER_DAY = 86_400_000
_SELECT_ROW = "SELECT id, stream, seq, created_ms, key_id, nonce, sealed FROM records"
_Row = tuple[int, int, int, int, int, bytes, bytes]
_Candidate = tuple[int, int, int, int, int, int]  # id, stream, seq, created_ms, size, state
# Lease queries (literals, see above). Live telemetry is found through records_pending_age (the
# rows of the last seconds, few) and sorted by seq; the backlog is walked along records_pending.
_LEASE_ALARM = _SELECT_ROW + " WHERE stream = 0 AND state = 0 AND seq > ? ORDER BY seq LIMIT ?"
_LEASE_EVENT = _SELECT_ROW + " WHERE stream = 1 AND state = 0 AND seq > ? ORDER BY seq LIMIT ?"
_LEASE_TELEMETRY = _SELECT_ROW + " WHERE stream = 2 AND state = 0 AND seq > ? ORDER BY seq LIMIT ?"
_LEASE_LIVE = (
    "SELECT id, stream, seq, created_ms, key_id, nonce, sealed FROM records"
    " INDEXED BY records_pending_age"
    " WHERE stream = 2 AND state = 0 AND created_ms >= ? AND seq > ? ORDER BY seq LIMIT ?"
)
_LEASE_BACKLOG = (
    "SELECT id, stream, seq, created_ms, key_id, nonce, sealed FROM records"
    " INDEXED BY records_pending"
    " WHERE stream = 2 AND state = 0 AND created_ms < ? AND seq > ? ORDER BY seq LIMIT ?"
)


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def _seq_runs(keys: Iterable[tuple[Stream, int]]) -> list[tuple[int, int, int]]:
    """``(stream, first, last)`` for each run of consecutive seqs among ``keys``."""
    runs: list[list[int]] = []
    for stream, seq in sorted({(int(s), q) for s, q in keys}):
        last = runs[-1] if runs else None
        if last is not None and last[0] == stream and last[2] + 1 == seq:
            last[2] = seq
        else:
            runs.append([stream, seq, seq])
    return [(s, lo, hi) for s, lo, hi in runs]


def record_id(gateway_id: str, stream: Stream, seq: int) -> str:
    """The record's deterministic id on the wire: ``gateway/stream/seq``."""
    return f"{gateway_id}/{Stream(stream).wire_name}/{seq}"


class Store:
    """Encrypted, durable, prioritised record store. Build it with :meth:`open`."""

    def __init__(
        self,
        *,
        conn: sqlite3.Connection,
        lock_fd: int,
        keys: KeyRing,
        gateway_id: str,
        retention_days: float,
        capacity_bytes: int,
        stream_limits: Mapping[Stream, StreamLimit],
        reserve_bytes: int,
        path: Path,
        clock_ms: Callable[[], int],
        recovered_from: Path | None,
    ) -> None:
        """Private: use :meth:`open`."""
        self._conn: sqlite3.Connection | None = conn
        self._lock_fd = lock_fd
        self._keys = keys
        self._gateway = gateway_id
        limits = {s: stream_limits.get(s, StreamLimit()) for s in Stream}
        self._retention_ms = {
            s: int((lim.retention_days or retention_days) * _MS_PER_DAY)
            for s, lim in limits.items()
        }
        self._stream_capacity = {s: lim.capacity_bytes for s, lim in limits.items()}
        self._capacity = capacity_bytes
        self._reserve = reserve_bytes
        self._path = path
        self._clock_ms = clock_ms
        self.recovered_from = recovered_from
        """Where a corrupt or foreign database was moved on open (None: nothing was)."""
        self._leased: set[tuple[Stream, int]] = set()
        self._evictions: dict[tuple[Stream, EvictionReason], tuple[int, int, int]] = {}
        self._shortened: dict[Stream, tuple[int, int, int]] = {}  # see take_shortened
        self._last_seq = {
            Stream(s): n for s, n in conn.execute("SELECT stream, last_seq FROM streams")
        }
        self._stream_bytes = dict.fromkeys(Stream, 0)
        for s, size in conn.execute("SELECT stream, SUM(size) FROM records GROUP BY stream"):
            self._stream_bytes[Stream(s)] = size
        self._bytes = sum(self._stream_bytes.values())

    @classmethod
    def open(
        cls,
        *,
        path: Path,
        key_file: Path,
        gateway_id: str,
        cipher: Literal["aes-256-gcm", "sm4-gcm"] = "aes-256-gcm",
        retention_days: float = 30.0,
        capacity_bytes: int = 1 << 30,
        stream_limits: Mapping[Stream, StreamLimit] | None = None,
        reserve_bytes: int = 16 << 20,
        max_file_bytes: int | None = None,
        clock_ms: Callable[[], int] = _wall_clock_ms,
    ) -> Store:
        """Open (creating as needed) the database at ``path`` and the key file ``key_file``.

        ``retention_days`` and ``capacity_bytes`` apply to the store (capacity: all streams
        together); ``stream_limits`` overrides retention and bounds bytes per stream.
        ``reserve_bytes`` of room (disk, or ``max_file_bytes``) are kept for alarms and events.
        ``max_file_bytes`` is a hard ceiling on the database file (SQLite ``max_page_count``;
        None: the disk is the limit). Creates missing parent directories (mode 0700), the
        database (WAL) and the key file (mode 0600, one fresh key). A corrupt or foreign
        database is moved aside and reported in :attr:`recovered_from`. Raises
        :class:`BufferKeyError` (needs a human) for a key file readable by group/others,
        malformed, or not holding the records' keys; :class:`BufferMismatchError` for another
        gateway's database or a newer schema; :class:`BufferInUseError` when another process
        has the store open.
        """
        if not gateway_id:
            raise ValueError("gateway_id must not be empty")
        if capacity_bytes <= 0 or retention_days <= 0:
            raise ValueError("capacity_bytes and retention_days must be positive")
        if reserve_bytes < 0:
            raise ValueError("reserve_bytes must not be negative")
        if max_file_bytes is not None and max_file_bytes <= reserve_bytes:
            raise ValueError("max_file_bytes must be larger than reserve_bytes")
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            lock_fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise from_os_error(exc, f"{path}: creating the buffer") from exc
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(lock_fd)
            raise BufferInUseError(f"{path}: another process has the buffer open") from exc
        conn: sqlite3.Connection | None = None
        try:
            conn, recovered = open_database(path, now_ms=clock_ms())
            if recovered is not None and key_file.exists():
                # The moved-aside records stay readable even after keys are pruned here.
                shutil.copy2(key_file, recovered.with_name(recovered.name + ".key"))
            _bind_gateway(conn, path, gateway_id)
            keys = KeyRing.load(conn, key_file, cipher, clock_ms())
            if max_file_bytes is not None:
                page_size = conn.execute("PRAGMA page_size").fetchone()[0]
                conn.execute(f"PRAGMA max_page_count = {max(1, max_file_bytes // page_size)}")
            return cls(
                conn=conn,
                lock_fd=lock_fd,
                keys=keys,
                gateway_id=gateway_id,
                retention_days=retention_days,
                capacity_bytes=capacity_bytes,
                stream_limits=stream_limits or {},
                reserve_bytes=reserve_bytes,
                path=path,
                clock_ms=clock_ms,
                recovered_from=recovered,
            )
        except BaseException as exc:
            if conn is not None:
                conn.close()
            os.close(lock_fd)
            if isinstance(exc, sqlite3.Error):
                raise from_sqlite(exc, f"{path}: opening the buffer") from exc
            if isinstance(exc, OSError):
                raise from_os_error(exc, f"{path}: opening the buffer") from exc
            raise

    # -- writing ---------------------------------------------------------------------------

    def append(
        self,
        stream: Stream,
        payloads: Sequence[bytes],
        *,
        created_ms: int | None = None,
        state: Mapping[str, bytes] | None = None,
    ) -> list[int]:
        """Seal and store ``payloads`` in one transaction; return their seqs (consecutive).

        ``state``: opaque values stored (sealed, replacing any previous value of the key) in the
        same transaction; ignored when ``payloads`` is empty.

        Durable when it returns. When the stream or the store would exceed its capacity,
        delivered records and then undelivered telemetry are evicted first, in the same
        transaction (counted). Raises :class:`BufferFullError` (transient; nothing stored) for a
        telemetry append that would eat into the reserve, or on a genuine SQLITE_FULL;
        :class:`BufferIOError` for other I/O failures.
        """
        conn = self._live()
        stream = Stream(stream)
        if not payloads:
            return []
        created = self._clock_ms() if created_ms is None else created_ms
        key = self._keys.active
        first = self._last_seq[stream] + 1
        rows = []
        incoming = 0
        for seq, payload in enumerate(payloads, start=first):
            aad = crypto.associated_data(self._gateway, stream, seq, created, key.id)
            nonce, sealed = key.seal(crypto.pack(payload), aad)
            size = len(nonce) + len(sealed) + _ROW_OVERHEAD
            rows.append((stream, seq, created, key.id, nonce, sealed, size))
            incoming += size
        last = first + len(payloads) - 1
        state_rows = []
        for name, value in (state or {}).items():
            aad = crypto.state_associated_data(self._gateway, name, key.id)
            nonce, sealed = key.seal(crypto.pack(value), aad)
            state_rows.append((name, key.id, nonce, sealed, created))
        if stream is Stream.TELEMETRY:
            self._check_room(conn, incoming)
        evicted: list[_Candidate] = []
        with self._transaction("append", durable=stream is Stream.ALARM):
            cap = self._stream_capacity[stream]
            if cap is not None and self._stream_bytes[stream] + incoming > cap:
                evicted = self._evict(conn, self._stream_bytes[stream] + incoming - cap, stream)
            overflow = self._bytes - sum(v[4] for v in evicted) + incoming - self._capacity
            if overflow > 0:
                evicted += self._evict(conn, overflow, None)
            conn.executemany(
                "INSERT INTO records(stream, seq, created_ms, key_id, nonce, sealed, size)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            conn.execute("UPDATE streams SET last_seq = ? WHERE stream = ?", (last, stream))
            if state_rows:
                conn.executemany(
                    "INSERT OR REPLACE INTO state(key, key_id, nonce, sealed, updated_ms)"
                    " VALUES (?, ?, ?, ?, ?)",
                    state_rows,
                )
            self._keys.count_seals(conn, key.id, len(rows) + len(state_rows))
        self._last_seq[stream] = last
        self._bytes += incoming
        self._stream_bytes[stream] += incoming
        self._forget(evicted, "capacity")
        self._keys.after_commit(key.id, len(rows) + len(state_rows))
        if self._keys.needs_rotation():
            self.rotate_key()
        return list(range(first, last + 1))

    def state(self, key: str) -> bytes | None:
        """The value last stored under ``key`` by an append, or None when never stored.

        Raises :class:`RecordAuthError` when the sealed value fails authentication."""
        return self.states(prefix=key, exact=True).get(key)

    def states(self, *, prefix: str = "", exact: bool = False) -> dict[str, bytes]:
        """Every stored state value whose key starts with ``prefix`` (one read)."""
        conn = self._live()
        if exact:
            query, arg = "SELECT key, key_id, nonce, sealed FROM state WHERE key = ?", prefix
        else:  # keys are text: a range scan on the primary key, no LIKE escaping needed
            query, arg = "SELECT key, key_id, nonce, sealed FROM state WHERE key >= ?", prefix
        try:
            rows = conn.execute(query, (arg,)).fetchall()
        except sqlite3.Error as exc:
            raise from_sqlite(exc, "reading state") from exc
        out: dict[str, bytes] = {}
        for name, key_id, nonce, sealed in rows:
            if not name.startswith(prefix):
                continue
            aad = crypto.state_associated_data(self._gateway, name, key_id)
            out[name] = crypto.unpack(self._keys.get(key_id).open(nonce, sealed, aad))
        return out

    def settle(
        self,
        *,
        accepted: Iterable[tuple[Stream, int]] = (),
        rejected: Iterable[tuple[Stream, int, str]] = (),
    ) -> None:
        """Mark ``accepted`` delivered and dead-letter ``rejected`` with its reason; un-lease both.

        Only undelivered records change state; unknown or already settled keys are ignored.
        One transaction: on failure nothing changed and the leases are kept.
        """
        conn = self._live()
        ok = [(Stream(s), q) for s, q in accepted]
        bad = [(Stream(s), q, reason) for s, q, reason in rejected]
        now = self._clock_ms()
        with self._transaction("settle"):
            # PUBACKs come back mostly in seq order: one statement per run of consecutive seqs.
            conn.executemany(
                "UPDATE records SET state = ?, settled_ms = ?"
                " WHERE stream = ? AND seq BETWEEN ? AND ? AND state = ?",
                [(_DELIVERED, now, s, lo, hi, _PENDING) for s, lo, hi in _seq_runs(ok)],
            )
            for s, q, reason in bad:
                cur = conn.execute(
                    "UPDATE records SET state = ?, reason = ?, settled_ms = ?"
                    " WHERE stream = ? AND seq = ? AND state = ?",
                    (_DEAD, reason, now, s, q, _PENDING),
                )
                if cur.rowcount:
                    conn.execute("UPDATE streams SET dead = dead + 1 WHERE stream = ?", (s,))
        self._leased.difference_update(ok)
        self._leased.difference_update((s, q) for s, q, _ in bad)

    # -- reading ---------------------------------------------------------------------------

    def lease(
        self, *, max_count: int, max_bytes: int, live_since_ms: int | None = None
    ) -> list[Record]:
        """Hand out undelivered, unleased records: alarm, then event, then telemetry; by seq.

        With ``live_since_ms``, telemetry created at or after it (live data) comes before the
        older telemetry (the backlog of an outage); each part by seq. Stops at ``max_count``
        records or before ``max_bytes`` of payload would be exceeded, but always returns at
        least one record when any is available. Records failing authentication are
        quarantined and skipped.
        """
        conn = self._live()
        if max_count < 1 or max_bytes < 1:
            raise ValueError("max_count and max_bytes must be positive")
        out: list[Record] = []
        total = 0
        bad: list[tuple[_Row, str]] = []
        for stream, query, bound in self._lease_order(live_since_ms):
            after = 0
            while len(out) < max_count:
                limit = min(max_count - len(out) + len(self._leased), _CHUNK)
                args = (after, limit) if bound is None else (bound, after, limit)
                batch = conn.execute(query, args).fetchall()
                if not batch:
                    break
                for row in batch:
                    after = row[2]
                    if (stream, row[2]) in self._leased:
                        continue
                    try:
                        record = self._unseal(row)
                    except RecordAuthError as exc:
                        bad.append((row, str(exc)))
                        continue
                    if out and total + len(record.payload) > max_bytes:
                        self._quarantine(bad)
                        return self._take(out)
                    out.append(record)
                    total += len(record.payload)
                    if len(out) >= max_count:
                        break
        self._quarantine(bad)
        return self._take(out)

    @staticmethod
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

    def release(self, keys: Iterable[tuple[Stream, int]]) -> None:
        """Give leases back (the publish was lost); unknown keys are ignored."""
        self._leased.difference_update((Stream(s), q) for s, q in keys)

    def release_all(self) -> None:
        """Give every lease back (e.g. on disconnect)."""
        self._leased.clear()

    def resend(self, stream: Stream, from_seq: int, to_seq: int) -> list[Record]:
        """Records of ``stream`` with ``from_seq <= seq <= to_seq`` still retained, whatever
        their state, by seq. Leases are not changed; the caller bounds the range."""
        conn = self._live()
        rows = conn.execute(
            _SELECT_ROW + " WHERE stream = ? AND seq BETWEEN ? AND ? ORDER BY seq",
            (Stream(stream), from_seq, to_seq),
        ).fetchall()
        out: list[Record] = []
        bad: list[tuple[_Row, str]] = []
        for row in rows:
            try:
                out.append(self._unseal(row))
            except RecordAuthError as exc:
                bad.append((row, str(exc)))
        self._quarantine(bad)
        return out

    def stats(self) -> StoreStats:
        """A consistent snapshot (one read transaction)."""
        conn = self._live()
        leased: dict[Stream, int] = {}
        for s, _ in self._leased:
            leased[s] = leased.get(s, 0) + 1
        return query_stats(
            conn,
            leased=leased,
            capacity_bytes=self._capacity,
            active_key_id=self._keys.active.id,
            key_ids=self._keys.ids(),
        )

    # -- housekeeping ----------------------------------------------------------------------

    def maintain(self) -> None:
        """Apply retention (age, per stream), enforce capacities, free delivered records while
        room is short of twice the reserve, prune retired keys, return free pages.

        Records older than their stream's retention: delivered and dead ones are deleted;
        undelivered telemetry is evicted (counted, reported); undelivered alarms and events are
        kept until delivered. Works in short transactions so appends are never blocked for long.
        """
        conn = self._live()
        now = self._clock_ms()
        for stream in Stream:
            cutoff = now - self._retention_ms[stream]
            queries: list[tuple[str, EvictionReason | None]] = [
                (
                    "SELECT id, stream, seq, created_ms, size, state FROM records"
                    " WHERE state <> 0 AND stream = ? AND created_ms < ?"
                    " ORDER BY created_ms LIMIT ?",
                    None,
                ),
            ]
            if stream is Stream.TELEMETRY:
                queries.append(
                    (
                        "SELECT id, stream, seq, created_ms, size, state FROM records"
                        " WHERE stream = 2 AND state = 0 AND stream = ? AND created_ms < ?"
                        " ORDER BY created_ms LIMIT ?",
                        "retention",
                    ),
                )
            for query, reason in queries:
                while True:
                    with self._transaction("retention"):
                        victims = conn.execute(query, (stream, cutoff, _CHUNK)).fetchall()
                        self._delete(conn, victims)
                    self._forget(victims, reason)
                    if len(victims) < _CHUNK:
                        break
            with self._transaction("retention"):
                conn.execute(
                    "DELETE FROM quarantine WHERE stream = ? AND created_ms < ?", (stream, cutoff)
                )
            cap = self._stream_capacity[stream]
            if cap is not None and self._stream_bytes[stream] > cap:
                with self._transaction("capacity"):
                    evicted = self._evict(conn, self._stream_bytes[stream] - cap, stream)
                self._forget(evicted, "capacity")
        if self._bytes > self._capacity:
            with self._transaction("capacity"):
                evicted = self._evict(conn, self._bytes - self._capacity, None)
            self._forget(evicted, "capacity")
        short = 2 * self._reserve - self._room(conn)
        if short > 0:
            with self._transaction("freeing room"):
                freed = self._evict(conn, short, None, delivered_only=True)
            self._forget(freed, None)
        try:
            self._keys.prune(conn)
            conn.execute("PRAGMA incremental_vacuum")
        except sqlite3.Error as exc:
            raise from_sqlite(exc, "maintenance") from exc

    def take_evictions(self) -> list[Eviction]:
        """Evictions of undelivered records since the last call (then forgotten here; the
        per-stream totals stay in :meth:`stats`)."""
        out = [
            Eviction(stream, count, first, last, reason)
            for (stream, reason), (count, first, last) in sorted(self._evictions.items())
        ]
        self._evictions.clear()
        return out

    def take_shortened(self) -> list[Eviction]:
        """Delivered (or dead) records evicted by capacity while younger than their stream's
        retention, since the last call: the local record is shorter than promised. Not drops
        (they were delivered), so not in :meth:`take_evictions` nor in the ``evicted`` totals."""
        out = [
            Eviction(stream, count, first, last, "capacity")
            for stream, (count, first, last) in sorted(self._shortened.items())
        ]
        self._shortened.clear()
        return out

    def rotate_key(self) -> int:
        """Seal new records with a fresh key (written to the key file first); old keys stay
        until no retained record needs them (pruned by :meth:`maintain`). Returns its id."""
        conn = self._live()
        try:
            return self._keys.rotate(conn, self._clock_ms())
        except sqlite3.Error as exc:
            raise from_sqlite(exc, "rotating the key") from exc

    def close(self) -> None:
        """Drop leases, close the database, release the lock. Idempotent."""
        if self._conn is None:
            return
        self._leased.clear()
        try:
            self._conn.close()
        finally:
            self._conn = None
            os.close(self._lock_fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------

    def _live(self) -> sqlite3.Connection:
        if self._conn is None:
            raise BufferClosedError("the store is closed")
        return self._conn

    @contextmanager
    def _transaction(self, doing: str, *, durable: bool = False) -> Iterator[None]:
        """BEGIN IMMEDIATE .. COMMIT; rolls back on any error; translates SQLite errors."""
        conn = self._live()
        try:
            if durable:
                conn.execute("PRAGMA synchronous = FULL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise from_sqlite(exc, doing) from exc
        finally:
            if durable:
                conn.execute("PRAGMA synchronous = NORMAL")

    def _unseal(self, row: _Row) -> Record:
        _, stream, seq, created, key_id, nonce, sealed = row
        key = self._keys.get(key_id)
        aad = crypto.associated_data(self._gateway, stream, seq, created, key_id)
        payload = crypto.unpack(key.open(nonce, sealed, aad))
        return Record(stream=Stream(stream), seq=seq, created_ms=created, payload=payload)

    def _take(self, records: list[Record]) -> list[Record]:
        self._leased.update((r.stream, r.seq) for r in records)
        return records

    def _quarantine(self, bad: list[tuple[_Row, str]]) -> None:
        """Move records that failed authentication out of ``records`` (counted per stream)."""
        if not bad:
            return
        conn = self._live()
        now = self._clock_ms()
        moved: list[tuple[Stream, int, int]] = []
        with self._transaction("quarantine"):
            for row, reason in bad:
                rid, stream, seq = row[0], Stream(row[1]), row[2]
                size = conn.execute("SELECT size FROM records WHERE id = ?", (rid,)).fetchone()
                if size is None:
                    continue
                conn.execute(
                    "INSERT INTO quarantine(stream, seq, created_ms, key_id, nonce, sealed,"
                    " reason, at_ms) SELECT stream, seq, created_ms, key_id, nonce, sealed, ?, ?"
                    " FROM records WHERE id = ?",
                    (reason, now, rid),
                )
                conn.execute("DELETE FROM records WHERE id = ?", (rid,))
                conn.execute(
                    "UPDATE streams SET quarantined = quarantined + 1 WHERE stream = ?", (stream,)
                )
                moved.append((stream, seq, size[0]))
        for stream, seq, size in moved:
            self._bytes -= size
            self._stream_bytes[stream] -= size
            self._leased.discard((stream, seq))

    def _evict(
        self,
        conn: sqlite3.Connection,
        need: int,
        stream: Stream | None,
        *,
        delivered_only: bool = False,
    ) -> list[_Candidate]:
        """Inside a transaction: delete delivered/dead records oldest first, then undelivered
        telemetry by seq, until ``need`` bytes are freed or nothing evictable is left; only
        records of ``stream`` unless it is None. Alarms and events that are undelivered are
        never touched (the store may then exceed its capacity; a full disk surfaces as
        BufferFullError)."""
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
        evicted: list[_Candidate] = []
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
                self._delete(conn, take)
                evicted.extend(take)
        return evicted

    def _room(self, conn: sqlite3.Connection) -> int:
        try:
            return room_bytes(conn, self._path)
        except sqlite3.Error as exc:
            raise from_sqlite(exc, "measuring free space") from exc
        except OSError as exc:
            raise from_os_error(exc, "measuring free space") from exc

    def _check_room(self, conn: sqlite3.Connection, incoming: int) -> None:
        """Refuse a telemetry append that would leave less than the reserve (see module)."""
        room = self._room(conn)
        if room - 2 * incoming < self._reserve:
            raise BufferFullError(
                f"telemetry refused: {room} bytes of room left and the last {self._reserve} "
                "are kept for alarms and events; free disk space or lower the buffer's capacity"
            )

    def _delete(self, conn: sqlite3.Connection, victims: list[_Candidate]) -> None:
        """Inside a transaction: delete ``victims``, counting undelivered ones per stream."""
        conn.executemany("DELETE FROM records WHERE id = ?", [(v[0],) for v in victims])
        dropped: dict[int, int] = {}
        for v in victims:
            if v[5] == _PENDING:
                dropped[v[1]] = dropped.get(v[1], 0) + 1
        for s, n in dropped.items():
            conn.execute("UPDATE streams SET evicted = evicted + ? WHERE stream = ?", (n, s))

    def _forget(self, victims: list[_Candidate], reason: EvictionReason | None) -> None:
        """After commit: account freed bytes, drop leases, record evictions of pending rows."""
        for _, s, seq, created, size, state in victims:
            stream = Stream(s)
            self._bytes -= size
            self._stream_bytes[stream] -= size
            self._leased.discard((stream, seq))
            if state != _PENDING and reason == "capacity":
                if created > self._clock_ms() - self._retention_ms[stream]:
                    n, first, last = self._shortened.get(stream, (0, created, created))
                    self._shortened[stream] = (n + 1, min(first, created), max(last, created))
                continue
            if state != _PENDING or reason is None:
                continue
            count, first, last = self._evictions.get((stream, reason), (0, created, created))
            self._evictions[(stream, reason)] = (count + 1, min(first, created), max(last, created))


def _bind_gateway(conn: sqlite3.Connection, path: Path, gateway_id: str) -> None:
    """A database is bound to one gateway id (its records' associated data names it)."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'gateway_id'").fetchone()
    if row is None:
        conn.execute("INSERT INTO meta(key, value) VALUES ('gateway_id', ?)", (gateway_id,))
    elif row[0] != gateway_id:
        raise BufferMismatchError(
            f"{path}: this buffer belongs to gateway {row[0]!r}, not {gateway_id!r}; "
            "fix gateway.id or move the database aside"
        )
