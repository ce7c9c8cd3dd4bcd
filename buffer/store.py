"""The encrypted store-and-forward buffer: the public facade over its parts.

Invariants (each part states its own in detail):
1. Seqs are per stream, start at 1 and are never reused, whatever happens to the database:
   the seq ledger covers a seq before it is written (:mod:`buffer.ledger`), and an open after
   any loss continues above the ledger's ceiling and reports the ranges it cannot account
   for (:mod:`buffer.recovery`).
2. Durable before leased: a record is handed to the uplink only after its commit is on disk
   (:mod:`buffer.acks`: one WAL fsync per forward batch, or one :class:`WalSync` run off the
   store's thread for ``lease(sync=False)``); alarms are durable when ``append`` returns.
   A failed append stored nothing and consumed no seq (:mod:`buffer.writer`).
3. Nothing deleted before acknowledged; every drop counted (:mod:`buffer.writer`,
   :mod:`buffer.retention`); refused telemetry counted persistently and reported.
4. A full disk never locks alarms out, nor settling, releasing or evicting: the reserve is
   held by a ballast file that survives restarts (:mod:`buffer.space`).
5. Leases live in memory only; after a restart every unsettled record is leased again.
6. The database never holds a plaintext payload (:mod:`buffer.crypto`); every buffer file
   (database, -wal, -shm, ledger, key file) is mode 0600 and refused when open to others.
7. Damage is salvaged, never just discarded: a database moved aside (at open, or by
   :meth:`Store.recover` after corruption found while running) is read page by page and
   every record that still authenticates is kept with its original seq (:mod:`buffer.salvage`).
8. State given with an append (``append(..., state={key: bytes})``) commits in the append's
   transaction: a caller's persisted state never disagrees with its records; the store never
   interprets the bytes (:mod:`buffer.kvstate`).

Threading: a Store is used from one thread only (the agent's event loop thread); the SQLite
connection refuses use from another. :meth:`Store.check_integrity` is the exception: it opens
its own connection; and :meth:`WalSync.run` (a sync taken with :meth:`Store.begin_sync`) only
fsyncs a descriptor of its own. One process at a time: ``<db>.lock`` is held with ``flock``.

Files beside the database ``buffer.db``: ``buffer.db.lock``, ``buffer.db.ledger`` (the seq
ledger), ``buffer.db.reserve`` (the ballast), ``buffer.db.corrupt-<UTC>`` (moved aside).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

from buffer import acks, kvstate, reporting, retention, writer
from buffer.core import Core, WalSync
from buffer.errors import BufferInUseError, StoreError, from_os_error, from_sqlite
from buffer.opening import Settings, open_core
from buffer.record import Record, Stream
from buffer.recovery import OpenReport
from buffer.reports import Report
from buffer.stats import Eviction, Kept, StoreStats, StreamLimit, query_stats
from buffer.writer import Appended

__all__ = ["Appended", "Store", "WalSync", "record_id"]


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def record_id(gateway_id: str, stream: Stream, seq: int) -> str:
    """The record's deterministic id on the wire: ``gateway/stream/seq``."""
    return f"{gateway_id}/{Stream(stream).wire_name}/{seq}"


class Store:
    """Encrypted, durable, prioritised record store. Build it with :meth:`open`."""

    def __init__(self, *, core: Core, lock_fd: int, settings: Settings, report: OpenReport):
        """Private: use :meth:`open`."""
        self._core = core
        self._lock_fd: int | None = lock_fd
        self._settings = settings
        self.open_report = report
        """What the last open (or :meth:`recover`) found: ledger state, gaps, corruption."""

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
        monotonic: Callable[[], float] = time.monotonic,
    ) -> Store:
        """Open (creating as needed) the database at ``path`` and the key file ``key_file``.

        ``retention_days`` and ``capacity_bytes`` apply to the store (capacity: all streams
        together); ``stream_limits`` overrides retention and bounds bytes per stream.
        ``reserve_bytes`` of room (disk, or ``max_file_bytes``) are kept for alarms and events.
        ``max_file_bytes`` is a hard ceiling on the database file (SQLite ``max_page_count``;
        None: the disk is the limit). Creates missing parent directories (mode 0700), the
        database (WAL, mode 0600), the seq ledger and the key file (mode 0600, one fresh key).
        A corrupt or foreign database is moved aside, salvaged and reported
        (:attr:`open_report`, :meth:`flush_reports`). Raises :class:`BufferKeyError` /
        :class:`BufferPermissionError` (needs a human) for a key file or buffer file open to
        group/others, a malformed key file, or one not holding the records' keys;
        :class:`BufferMismatchError` for another gateway's database or ledger or a newer
        schema; :class:`BufferInUseError` when another process has the store open.
        """
        if not gateway_id:
            raise ValueError("gateway_id must not be empty")
        if capacity_bytes <= 0 or retention_days <= 0:
            raise ValueError("capacity_bytes and retention_days must be positive")
        if reserve_bytes < 0:
            raise ValueError("reserve_bytes must not be negative")
        if max_file_bytes is not None and max_file_bytes <= reserve_bytes:
            raise ValueError("max_file_bytes must be larger than reserve_bytes")
        settings = Settings(
            path,
            key_file,
            gateway_id,
            cipher,
            retention_days,
            capacity_bytes,
            stream_limits or {},
            reserve_bytes,
            max_file_bytes,
            clock_ms,
            monotonic,
        )
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
        try:
            core, report = open_core(settings, detected="open", force_aside=False)
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(core=core, lock_fd=lock_fd, settings=settings, report=report)

    @property
    def recovered_from(self) -> Path | None:
        """Where a corrupt or foreign database was moved by the last open (None: nothing)."""
        moved = self.open_report.recovered_from
        return None if moved is None else Path(moved)

    # -- writing and forwarding ------------------------------------------------------------

    def append(
        self,
        stream: Stream,
        payloads: Sequence[bytes],
        *,
        created_ms: int | None = None,
        state: Mapping[str, bytes] | None = None,
    ) -> list[int]:
        """Seal and store ``payloads`` in one transaction; return their seqs (consecutive).

        ``state``: opaque values stored (sealed, replacing any previous value of each key) in
        the same transaction, so they never disagree with the records (:mod:`buffer.kvstate`);
        ignored when ``payloads`` is empty. Read back with :meth:`state` / :meth:`states`.

        Committed when it returns (alarms: durable; others: durable before they are leased).
        Raises :class:`BufferFullError` (transient; nothing stored, no seq spent, the refusal
        counted) for a telemetry append that would eat into the reserve, or on a genuine full
        disk; :class:`BufferIOError` for other I/O failures.
        """
        seqs = writer.append(self._core, Stream(stream), payloads, created_ms, state=state)
        if self._core.keys.needs_rotation():
            self.rotate_key()
        return seqs

    def append_batch(
        self,
        parts: Mapping[Stream, Sequence[bytes]],
        *,
        created_ms: int | None = None,
        state: Mapping[str, bytes] | None = None,
    ) -> Appended:
        """Seal and store the payloads of several streams (one device poll's alarms, events,
        telemetry, incident windows) in one transaction: each stream's seqs consecutive, as if
        appended one after the other in stream order; ``state`` as in :meth:`append`.

        Committed when it returns (durable when it holds alarms). Telemetry that :meth:`append`
        would refuse with :class:`BufferFullError` is left out, counted, and named in
        :attr:`Appended.refused` while the rest is committed; raises as :meth:`append` does
        when nothing was stored (then nothing was, and no seq was spent).
        """
        done = writer.append_batch(
            self._core, {Stream(s): p for s, p in parts.items()}, created_ms, state=state
        )
        if self._core.keys.needs_rotation():
            self.rotate_key()
        return done

    def state(self, key: str) -> bytes | None:
        """The value last stored under ``key`` by an append, or None when never stored.

        Raises :class:`RecordAuthError` when the sealed value fails authentication."""
        return kvstate.read(self._core, key, exact=True).get(key)

    def states(self, *, prefix: str = "") -> dict[str, bytes]:
        """Every stored state value whose key starts with ``prefix`` (one read)."""
        return kvstate.read(self._core, prefix, exact=False)

    def lease(
        self,
        *,
        max_count: int,
        max_bytes: int,
        live_since_ms: int | None = None,
        sync: bool = True,
    ) -> list[Record]:
        """Hand out durable, undelivered, unleased records: alarm, event, then telemetry, by
        seq (with ``live_since_ms``: live telemetry before the backlog). Stops at
        ``max_count`` records or before ``max_bytes`` of payload, but returns at least one
        when any is available. Records failing authentication are quarantined and skipped.

        ``sync``: first make every commit durable (a WAL fsync on this thread when needed);
        without it only records already durable are handed out (see :meth:`begin_sync`)."""
        return acks.lease(self._core, max_count, max_bytes, live_since_ms, sync=sync)

    def begin_sync(self) -> WalSync | None:
        """A WAL fsync covering every commit so far, to run on another thread
        (:meth:`WalSync.run`) and then hand to :meth:`end_sync` on this one; None when every
        commit is durable already (the first sync after an open is made here, inline).
        Commits made while it runs are not covered: they wait for the next one."""
        return self._core.begin_sync()

    def end_sync(self, done: WalSync) -> None:
        """``done.run()`` returned: the records it covered may now be leased with
        ``sync=False`` (a sync taken before a :meth:`recover` counts for nothing)."""
        self._core.end_sync(done)

    def release(self, keys: Iterable[tuple[Stream, int]]) -> None:
        """Give leases back (the publish was lost); unknown keys are ignored."""
        acks.release(self._core, keys)

    def release_all(self) -> None:
        """Give every lease back (e.g. on disconnect)."""
        acks.release(self._core, None)

    def settle(
        self,
        *,
        accepted: Iterable[tuple[Stream, int]] = (),
        rejected: Iterable[tuple[Stream, int, str]] = (),
        defer: bool = False,
    ) -> None:
        """Mark ``accepted`` delivered and dead-letter ``rejected`` with its reason; un-lease
        both. Unknown or already settled keys are ignored; on failure nothing changed.

        ``defer`` (and nothing rejected): only stage the deliveries; the next append writes
        them in its transaction, or :meth:`flush_settles` (or any settle) does. Staged
        records stay leased (never handed out again); :meth:`stats`, :meth:`maintain` and
        :meth:`close` write them first. A power cut before they are written loses only the
        mark: the records are sent again with the same ids (at-least-once)."""
        acks.settle(self._core, accepted, rejected, defer=defer)

    @property
    def staged_settles(self) -> int:
        """Deliveries staged by ``settle(defer=True)`` and not yet written."""
        return len(self._core.staged)

    def flush_settles(self) -> None:
        """Write the staged deliveries now (nothing when none are staged)."""
        if self._core.staged:
            acks.settle(self._core, (), ())

    def resend(self, stream: Stream, from_seq: int, to_seq: int) -> list[Record]:
        """Records of ``stream`` with ``from_seq <= seq <= to_seq`` still retained, whatever
        their state, by seq. Leases are not changed; the caller bounds the range."""
        return acks.resend(self._core, Stream(stream), from_seq, to_seq)

    # -- reports ---------------------------------------------------------------------------

    def pending_reports(self) -> list[Report]:
        """Reports not yet turned into events: gaps, corruption, refused telemetry."""
        return [r for _, r in reporting.pending(self._core)]

    def flush_reports(self, encode: Callable[[Report], bytes]) -> int:
        """Append ``encode(report)`` for every pending report to the event stream and clear
        them, in one transaction; returns how many. Raises as :meth:`append` does."""
        return reporting.flush(self._core, encode)

    # -- housekeeping ----------------------------------------------------------------------

    def stats(self) -> StoreStats:
        """A consistent snapshot (one read transaction), staged deliveries written first
        (when that fails they count as leased, as they still are)."""
        with contextlib.suppress(StoreError):
            self.flush_settles()
        leased: dict[Stream, int] = {}
        for s, _ in self._core.leased:
            leased[s] = leased.get(s, 0) + 1
        return query_stats(
            self._core.live(),
            leased=leased,
            capacity_bytes=self._core.capacity,
            active_key_id=self._core.keys.active.id,
            key_ids=self._core.keys.ids(),
            kept=Kept(self._core.counts, self._core.stream_bytes),
        )

    def maintain(self) -> None:
        """Retention, capacities, room for a full disk, the ballast, the ledger's watermarks,
        key pruning (see :mod:`buffer.retention`). Raises :class:`BufferCorruptError` when
        the database went corrupt (then call :meth:`recover`)."""
        self.flush_settles()
        retention.maintain(self._core)

    def check_integrity(self) -> list[str]:
        """``PRAGMA quick_check`` on its own read-only connection (safe from a worker thread):
        ``[]`` when sound. When it is not, call :meth:`recover` from the store's thread."""
        return retention.check_integrity(self._settings.path)

    def recover(self) -> OpenReport:
        """The database went corrupt while open: move it aside, salvage it and continue in a
        fresh one, exactly as an open would (leases are dropped; reports queued)."""
        self._close_core()
        core, report = open_core(self._settings, detected="running", force_aside=True)
        self._core = core
        self.open_report = report
        return report

    def take_evictions(self) -> list[Eviction]:
        """Evictions of undelivered records since the last call (then forgotten here; the
        per-stream totals stay in :meth:`stats`)."""
        ev = self._core.evictions
        out = [Eviction(s, n, a, b, reason) for (s, reason), (n, a, b) in sorted(ev.items())]
        ev.clear()
        return out

    def take_shortened(self) -> list[Eviction]:
        """Delivered (or dead) records evicted by capacity while younger than their stream's
        retention, since the last call: the local record is shorter than promised. Not drops
        (they were delivered), so not in :meth:`take_evictions` nor in the ``evicted`` totals."""
        short = self._core.shortened
        out = [Eviction(s, n, a, b, "capacity") for s, (n, a, b) in sorted(short.items())]
        short.clear()
        return out

    def rotate_key(self) -> int:
        """Seal new records with a fresh key (written to the key file first); old keys stay
        until no retained record needs them (pruned by :meth:`maintain`). Returns its id."""
        conn = self._core.live()
        try:
            return self._core.keys.rotate(conn, self._core.clock_ms())
        except sqlite3.Error as exc:
            raise from_sqlite(exc, "rotating the key") from exc

    @property
    def syncs(self) -> int:
        """WAL fsyncs made for durability since open (benchmarks read it)."""
        return self._core.syncs

    @property
    def lease_queries(self) -> int:
        """Lease SELECTs run since open (a lease with nothing new to find runs none)."""
        return self._core.lease_queries

    @property
    def commits(self) -> int:
        """Write transactions committed since open (tests and benchmarks read it)."""
        return self._core.commits

    @property
    def ledger_writes(self) -> int:
        """Seq ledger fsyncs since open (benchmarks read it)."""
        return self._core.ledger.writes

    def close(self) -> None:
        """Make everything durable, close the database, mark the ledger clean, release the
        lock. Idempotent."""
        if self._lock_fd is None:
            return
        try:
            with contextlib.suppress(StoreError):  # unwritten, they are sent again: no loss
                self.flush_settles()
            self._close_core(clean=True)
        finally:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _close_core(self, *, clean: bool = False) -> None:
        core = self._core
        if core.conn is None:
            return
        core.leased.clear()
        core.staged.clear()
        core.fresh.clear()
        core.fresh_bytes = 0
        try:
            if clean:
                retention.refresh_ledger(core)
        except StoreError:
            clean = False  # the ledger stays as it was: the next open reports a power_loss gap
        finally:
            core.close_files()
            core.conn.close()
            core.conn = None
            if not clean:
                core.ledger.close()
        if clean:  # the close checkpointed the WAL into the (synced) database file
            for stream, mark in core.ledger.marks.items():
                mark.reserved = core.last_seq[stream]
            core.ledger.clean = True
            try:
                writer.with_room(core, lambda: retention.write_ledger(core))
            except StoreError:
                core.ledger.clean = False  # as above: a gap at the next open, never a reuse
            finally:
                core.ledger.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
