"""The state every part of the store shares: the connection, the keys, the seq ledger, the
byte accounting, the leases, and the few operations all parts need.

Invariants:
1. ``last_seq[s]`` is the last seq committed for stream ``s`` (never lowered); ``durable[s]``
   <= ``last_seq[s]`` is the last seq known to be on disk. :meth:`Core.sync` makes everything
   committed durable with one fsync of the WAL; a commit at ``synchronous=FULL`` (alarms) does
   the same for every stream, because the WAL is one sequential file. A :class:`WalSync`
   does the same fsync on another thread: it covers the commits made before it was taken
   (its ``target``), and only :meth:`Core.end_sync`, back on the store's thread after the
   fsync returned, raises ``durable`` to that target (never lowers it).
2. ``lease_epoch`` is raised whenever a record may have become leasable (``durable`` raised,
   leases given back); nothing else makes one leasable (a delivered or dead record never is
   again, and appends count only once durable).
3. ``bytes`` and ``stream_bytes`` equal the sum of ``records.size`` (updated only after a
   commit); ``leased`` names only records still in ``records``, ``staged`` only leased ones.
4. Every SQLite or OS error leaving this module is translated into the buffer's tree
   (:mod:`buffer.errors`); a failed transaction is rolled back whole.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from buffer import crypto
from buffer.errors import BufferClosedError, RecordAuthError, from_os_error, from_sqlite
from buffer.keyring import KeyRing
from buffer.ledger import Ledger
from buffer.record import Record, Stream
from buffer.settling import DEAD, DELIVERED, PENDING
from buffer.space import Ballast, Room, measure_room
from buffer.stats import EvictionReason

__all__ = ["PENDING", "ROW_OVERHEAD", "SELECT_ROW", "Candidate", "Core", "Row", "WalSync"]

ROW_OVERHEAD = 64
FRESH_MAX_BYTES = 2 << 20
"""Bound of :attr:`Core.fresh`: the last second's records of a large site, several times over;
while the uplink is down the oldest fall out (they are unsealed when leased, as before)."""
SELECT_ROW = "SELECT id, stream, seq, created_ms, key_id, nonce, sealed FROM records"
Row = tuple[int, int, int, int, int, bytes, bytes]
Candidate = tuple[int, int, int, int, int, int]  # id, stream, seq, created_ms, size, state


def _held(r: Record) -> int:
    d = r.deflated
    return r.size + (len(d.data) if d is not None else 0)


@dataclass(eq=False)
class WalSync:
    """One WAL fsync taken on the store's thread (:meth:`Core.begin_sync`) to be run on any
    thread (:meth:`run`, once) and handed back to :meth:`Core.end_sync` when it returned.

    It holds its own duplicate of the WAL's descriptor, so the store may close (or recover)
    while it runs: the fsync then lands on the old file and is simply not counted."""

    core: Core
    target: dict[Stream, int]
    fd: int
    wal: Path

    def run(self) -> None:
        """fsync the WAL (blocking; any thread). Raises :class:`BufferIOError` /
        :class:`BufferFullError`; the descriptor is closed either way."""
        try:
            os.fsync(self.fd)
        except OSError as exc:
            raise from_os_error(exc, f"{self.wal}: syncing the WAL") from exc
        finally:
            os.close(self.fd)


@dataclass(eq=False)
class Core:
    """Shared mutable state of one open store (one thread)."""

    conn: sqlite3.Connection | None
    keys: KeyRing
    gateway: str
    path: Path
    clock_ms: Callable[[], int]
    ledger: Ledger
    ballast: Ballast
    retention_ms: dict[Stream, int]
    stream_capacity: dict[Stream, int | None]
    capacity: int
    reserve: int
    leased: set[tuple[Stream, int]] = field(default_factory=set)
    # Deliveries taken (acks.settle with defer) but not yet written: the next append's
    # transaction writes them (buffer.writer), or a settle; their records stay in ``leased``
    # meanwhile, so they are never handed out again (a restart resends them: at-least-once).
    staged: list[tuple[Stream, int]] = field(default_factory=list)
    evictions: dict[tuple[Stream, EvictionReason], tuple[int, int, int]] = field(
        default_factory=dict
    )
    last_seq: dict[Stream, int] = field(default_factory=dict)
    durable: dict[Stream, int] = field(default_factory=dict)
    stream_bytes: dict[Stream, int] = field(default_factory=dict)
    # Records retained now per (stream, state), kept like ``bytes`` (after each commit), so
    # stats() need not scan ``records`` (a full buffer is 250,000 rows of a page each).
    counts: dict[tuple[Stream, int], int] = field(default_factory=dict)
    bytes: int = 0
    syncs: int = 0
    commits: int = 0
    # Raised whenever records may have become leasable (durable moved, leases given back): a
    # lease that found nothing more at ``exhausted_epoch == lease_epoch`` need not look again.
    lease_epoch: int = 0
    exhausted_epoch: int | None = None
    lease_queries: int = 0  # lease SELECTs run since open (tests and benchmarks read it)
    monotonic: Callable[[], float] = time.monotonic
    written: int = 0  # bytes appended since open (the room estimate's since-measured count)
    # (monotonic when, room then, ``written`` then): the last room measured for an append
    room_seen: tuple[float, Room, int] | None = None
    unsaved_refusals: dict[Stream, tuple[int, int, int, str]] = field(default_factory=dict)
    # delivered/dead records capacity evicted before their retention (Store.take_shortened)
    shortened: dict[Stream, tuple[int, int, int]] = field(default_factory=dict)
    # Records committed by this process and not yet leased, as they were appended (their
    # payload and, when stored deflated, that form too): a lease takes a record from here
    # instead of opening and inflating what it just sealed. Memory only, bounded by
    # FRESH_MAX_BYTES (oldest out first); a record not here is unsealed from its row.
    fresh: dict[tuple[Stream, int], Record] = field(default_factory=dict)
    fresh_bytes: int = 0
    _wal_fd: int | None = None

    def remember(self, records: list[Record]) -> None:
        """After a commit: keep ``records`` for their first lease (see ``fresh``)."""
        for r in records:
            self.fresh[(r.stream, r.seq)] = r
            self.fresh_bytes += _held(r)
        while self.fresh_bytes > FRESH_MAX_BYTES and self.fresh:
            self.fresh_bytes -= _held(self.fresh.pop(next(iter(self.fresh))))

    def take_fresh(self, key: tuple[Stream, int]) -> Record | None:
        r = self.fresh.pop(key, None)
        if r is not None:
            self.fresh_bytes -= _held(r)
        return r

    def load_counters(self) -> None:
        """Read ``last_seq`` and the byte accounting from the database."""
        conn = self.live()
        self.last_seq = {
            Stream(s): n for s, n in conn.execute("SELECT stream, last_seq FROM streams")
        }
        self.durable = dict.fromkeys(Stream, 0)
        self.stream_bytes = dict.fromkeys(Stream, 0)
        self.counts = {(s, state): 0 for s in Stream for state in (PENDING, DELIVERED, DEAD)}
        for s, state, n, size in conn.execute(
            "SELECT stream, state, count(*), SUM(size) FROM records GROUP BY stream, state"
        ):
            self.stream_bytes[Stream(s)] += size
            self.counts[(Stream(s), state)] = n
        self.bytes = sum(self.stream_bytes.values())

    def counted(self, stream: Stream, state: int, n: int) -> None:
        """After a commit: ``n`` more (or fewer) retained records of ``stream`` in ``state``."""
        self.counts[(stream, state)] = self.counts.get((stream, state), 0) + n

    def live(self) -> sqlite3.Connection:
        if self.conn is None:
            raise BufferClosedError("the store is closed")
        return self.conn

    @contextmanager
    def transaction(self, doing: str, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE .. COMMIT; rolls back on any error; translates SQLite errors. With
        ``durable`` the commit syncs the WAL (invariant 1)."""
        conn = self.live()
        try:
            if durable:
                conn.execute("PRAGMA synchronous = FULL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
                self.commits += 1
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise from_sqlite(exc, doing) from exc
        finally:
            if durable:
                conn.execute("PRAGMA synchronous = NORMAL")

    def committed_durably(self) -> None:
        """After a ``synchronous=FULL`` commit: everything committed is on disk."""
        self.durable = dict(self.last_seq)
        self.lease_epoch += 1

    def needs_sync(self) -> bool:
        return any(self.durable[s] < self.last_seq[s] for s in Stream)

    def sync(self) -> None:
        """One fsync of the WAL (and, the first time, of its directory): every commit so far
        becomes durable. Raises :class:`BufferIOError` / :class:`BufferFullError`."""
        wal = self.path.with_name(self.path.name + "-wal")
        try:
            if self._wal_fd is None:
                try:
                    self._wal_fd = os.open(wal, os.O_RDONLY)
                except FileNotFoundError:  # nothing committed in WAL mode yet: sync the file
                    fd = os.open(self.path, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                    self.committed_durably()
                    return
                dir_fd = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
            os.fsync(self._wal_fd)
        except OSError as exc:
            raise from_os_error(exc, f"{wal}: syncing the WAL") from exc
        self.syncs += 1
        self.committed_durably()

    def begin_sync(self) -> WalSync | None:
        """A :class:`WalSync` covering every commit so far, or None when they are all
        durable already. The first sync after an open (the WAL's directory entry, or no WAL
        yet) is made here, inline, and None returned."""
        if not self.needs_sync():
            return None
        if self._wal_fd is None:
            self.sync()
            return None
        try:
            fd = os.dup(self._wal_fd)
        except OSError as exc:
            raise from_os_error(exc, f"{self.path}-wal: syncing the WAL") from exc
        wal = self.path.with_name(self.path.name + "-wal")
        return WalSync(self, dict(self.last_seq), fd, wal)

    def end_sync(self, done: WalSync) -> None:
        """``done`` ran without error: what it covered is durable (a sync of another core,
        from before a recovery, changes nothing)."""
        if done.core is not self:
            return
        self.syncs += 1
        for s, seq in done.target.items():
            if seq > self.durable[s]:
                self.durable[s] = seq
                self.lease_epoch += 1

    def close_files(self) -> None:
        if self._wal_fd is not None:
            os.close(self._wal_fd)
            self._wal_fd = None

    def unseal(self, row: Row) -> Record:
        _, stream, seq, created, key_id, nonce, sealed = row
        key = self.keys.get(key_id)
        aad = crypto.associated_data(self.gateway, stream, seq, created, key_id)
        body = crypto.unpack_lazy(key.open(nonce, sealed, aad))
        if isinstance(body, bytes):
            return Record(Stream(stream), seq, created, body)
        return Record(Stream(stream), seq, created, deflated=body)  # inflated when read

    def room(self) -> Room:
        try:
            return measure_room(self.live(), self.path)
        except sqlite3.Error as exc:
            raise from_sqlite(exc, "measuring free space") from exc
        except OSError as exc:
            raise from_os_error(exc, "measuring free space") from exc

    def quarantine(self, bad: list[tuple[Row, str]]) -> None:
        """Move records that failed authentication out of ``records`` (counted per stream)."""
        if not bad:
            return
        now = self.clock_ms()
        moved: list[tuple[Stream, int, int, int]] = []  # stream, seq, size, state
        with self.transaction("quarantine") as conn:
            for row, reason in bad:
                rid, stream, seq = row[0], Stream(row[1]), row[2]
                size = conn.execute(
                    "SELECT size, state FROM records WHERE id = ?", (rid,)
                ).fetchone()
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
                moved.append((stream, seq, size[0], size[1]))
        for stream, seq, size, state in moved:
            self.bytes -= size
            self.stream_bytes[stream] -= size
            self.counted(stream, state, -1)
            self.leased.discard((stream, seq))
            self.take_fresh((stream, seq))

    def unseal_all(self, rows: list[Row]) -> tuple[list[Record], list[tuple[Row, str]]]:
        out: list[Record] = []
        bad: list[tuple[Row, str]] = []
        for row in rows:
            try:
                out.append(self.unseal(row))
            except RecordAuthError as exc:
                bad.append((row, str(exc)))
        return out, bad

    @staticmethod
    def delete(conn: sqlite3.Connection, victims: list[Candidate]) -> None:
        """Inside a transaction: delete ``victims``, counting undelivered ones per stream."""
        conn.executemany("DELETE FROM records WHERE id = ?", [(v[0],) for v in victims])
        dropped: dict[int, int] = {}
        for v in victims:
            if v[5] == PENDING:
                dropped[v[1]] = dropped.get(v[1], 0) + 1
        for s, n in dropped.items():
            conn.execute("UPDATE streams SET evicted = evicted + ? WHERE stream = ?", (n, s))

    def forget(self, victims: list[Candidate], reason: EvictionReason | None) -> None:
        """After commit: account freed bytes, drop leases, record evictions of pending rows
        (and, apart, settled rows that capacity took younger than their retention)."""
        now = self.clock_ms() if reason == "capacity" else 0
        for _, s, seq, created, size, state in victims:
            stream = Stream(s)
            self.bytes -= size
            self.stream_bytes[stream] -= size
            self.counted(stream, state, -1)
            self.leased.discard((stream, seq))
            self.take_fresh((stream, seq))
            if state != PENDING and reason == "capacity":
                if created > now - self.retention_ms[stream]:
                    n, first, last = self.shortened.get(stream, (0, created, created))
                    self.shortened[stream] = (n + 1, min(first, created), max(last, created))
                continue
            if state != PENDING or reason is None:
                continue
            count, first, last = self.evictions.get((stream, reason), (0, created, created))
            self.evictions[(stream, reason)] = (count + 1, min(first, created), max(last, created))
