"""A read-only view of a buffer, safe beside a running agent (``safeedge buffer stats``,
``verify``, ``export``).

Invariants:
- Never writes: the database is opened ``mode=ro`` (SQLite URI), the key file is only read, no
  record is quarantined, no file is moved aside, no key is created or registered.
- Takes no lock: WAL lets readers run while the agent (the one writer) appends; each call
  reads one snapshot (one read transaction). A long export holds its snapshot, so the agent's
  WAL cannot be checkpointed past it until the export ends (the WAL file grows meanwhile).
- A damaged file SQLite cannot read is read by :func:`salvage_file` instead: page by page,
  skipping what does not parse, every record authenticated, and the skipped part reported.
- Needs the ``-shm`` file to be writable or absent-and-creatable by the reader's user (SQLite's
  rule for WAL readers): run it as the agent's user or root.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

from buffer import crypto
from buffer.errors import (
    BufferIOError,
    BufferMismatchError,
    RecordAuthError,
    from_sqlite,
)
from buffer.keyring import KeyRing
from buffer.record import Stream
from buffer.salvage import scan_file
from buffer.schema import APPLICATION_ID, SCHEMA_VERSION
from buffer.stats import StoreStats, query_stats

__all__ = ["SalvageReport", "StoreReader", "StoredRecord", "VerifyReport", "salvage_file"]

State = Literal["undelivered", "delivered", "dead"]
_STATES: tuple[State, ...] = ("undelivered", "delivered", "dead")


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """One retained record as stored: ``payload`` is the decrypted body, or None with
    ``error`` saying why it failed authentication."""

    stream: Stream
    seq: int
    created_ms: int
    state: State
    reason: str | None
    settled_ms: int | None
    key_id: int
    payload: bytes | None
    error: str | None


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What :meth:`StoreReader.verify` found; ``ok`` when everything authenticated and the
    database passed ``PRAGMA quick_check``."""

    checked: dict[Stream, int]
    failed: list[tuple[Stream, int, str]] = field(default_factory=list)
    quarantine_rows: int = 0
    integrity: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed and self.integrity == ["ok"]


class StoreReader:
    """Read-only buffer access. Build it with :meth:`open`; one thread."""

    def __init__(self, conn: sqlite3.Connection, keys: KeyRing, gateway_id: str) -> None:
        """Private: use :meth:`open`."""
        self._conn = conn
        self._keys = keys
        self._gateway = gateway_id

    @classmethod
    def open(cls, *, path: Path, key_file: Path, gateway_id: str) -> StoreReader:
        """Open the existing buffer at ``path`` read-only. Raises :class:`BufferIOError` when
        there is no readable buffer, :class:`BufferMismatchError` for another gateway's or a
        foreign/newer database, :class:`BufferKeyError` for a missing, unsafe or wrong key file.
        """
        if not path.is_file():
            raise BufferIOError(f"{path}: no buffer database here (check --config / buffer.path)")
        try:
            conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            raise from_sqlite(exc, f"{path}: opening read-only") from exc
        conn.isolation_level = None
        try:
            _check(conn, path, gateway_id)
            keys = KeyRing.load_read_only(conn, key_file)
        except sqlite3.Error as exc:
            conn.close()
            raise from_sqlite(exc, f"{path}: opening read-only") from exc
        except BaseException:
            conn.close()
            raise
        return cls(conn, keys, gateway_id)

    def stats(self, capacity_bytes: int = 0) -> StoreStats:
        """The store's statistics (``leased`` is 0: leases live in the agent's memory)."""
        try:
            return query_stats(
                self._conn,
                leased={},
                capacity_bytes=capacity_bytes,
                active_key_id=self._keys.active.id,
                key_ids=self._keys.ids(),
            )
        except sqlite3.Error as exc:
            raise from_sqlite(exc, "reading statistics") from exc

    def records(
        self,
        *,
        stream: Stream | None = None,
        from_seq: int | None = None,
        to_seq: int | None = None,
        from_ms: int | None = None,
        to_ms: int | None = None,
    ) -> Iterator[StoredRecord]:
        """Retained records, decrypted, by stream (alarm, event, telemetry) then seq; bounds
        are inclusive, ``*_ms`` on the creation time. One snapshot for the whole iteration."""
        has_runs = self._conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'settled'")
        sql = _RECORDS_WITH_RUNS if has_runs.fetchone() else _RECORDS
        big = 2**63 - 1
        args = (
            None if stream is None else int(stream),
            from_seq if from_seq is not None else 0,
            to_seq if to_seq is not None else big,
            from_ms if from_ms is not None else -big,
            to_ms if to_ms is not None else big,
        )
        try:
            self._conn.execute("BEGIN")
            try:
                for row in self._conn.execute(sql, args):
                    yield self._decode(row)
            finally:
                self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise from_sqlite(exc, "reading records") from exc

    def verify(self) -> VerifyReport:
        """Authenticate every retained record and run ``PRAGMA quick_check``."""
        checked = dict.fromkeys(Stream, 0)
        failed: list[tuple[Stream, int, str]] = []
        for rec in self.records():
            checked[rec.stream] += 1
            if rec.error is not None:
                failed.append((rec.stream, rec.seq, rec.error))
        try:
            integrity = [r[0] for r in self._conn.execute("PRAGMA quick_check")]
            quarantined = self._conn.execute("SELECT count(*) FROM quarantine").fetchone()[0]
        except sqlite3.Error as exc:
            raise from_sqlite(exc, "checking integrity") from exc
        return VerifyReport(checked, failed, quarantined, integrity)

    def close(self) -> None:
        """Close the database. Idempotent."""
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _decode(
        self, row: tuple[int, int, int, int, str | None, int | None, int, bytes, bytes]
    ) -> StoredRecord:
        stream, seq, created, state, reason, settled, key_id, nonce, sealed = row
        payload: bytes | None = None
        error: str | None = None
        try:
            key = self._keys.get(key_id)
            aad = crypto.associated_data(self._gateway, stream, seq, created, key_id)
            payload = crypto.unpack(key.open(nonce, sealed, aad))
        except RecordAuthError as exc:
            error = str(exc)
        return StoredRecord(
            Stream(stream), seq, created, _STATES[state], reason, settled, key_id, payload, error
        )


_RECORDS = (
    "SELECT stream, seq, created_ms, state, reason, settled_ms, key_id, nonce, sealed"
    " FROM records r WHERE (?1 IS NULL OR stream = ?1) AND seq BETWEEN ?2 AND ?3"
    " AND created_ms BETWEEN ?4 AND ?5 ORDER BY stream, seq"
)
# A delivered record's time is its run's in ``settled`` (buffer/schema.py); files from before
# that table (read-only here) have it in the row.
_RECORDS_WITH_RUNS = (
    "SELECT stream, seq, created_ms, state, reason, coalesce(settled_ms, (SELECT s.settled_ms"
    " FROM settled s WHERE s.stream = r.stream AND s.last_seq >= r.seq AND s.first_seq <= r.seq"
    " AND r.state = 1 ORDER BY s.last_seq LIMIT 1)), key_id, nonce, sealed"
    " FROM records r WHERE (?1 IS NULL OR stream = ?1) AND seq BETWEEN ?2 AND ?3"
    " AND created_ms BETWEEN ?4 AND ?5 ORDER BY stream, seq"
)


def _check(conn: sqlite3.Connection, path: Path, gateway_id: str) -> None:
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if app_id != APPLICATION_ID or not 1 <= version <= SCHEMA_VERSION:
        raise BufferMismatchError(
            f"{path}: not a SafeEdge buffer of schema version {SCHEMA_VERSION} "
            f"(application_id {app_id:#x}, version {version})"
        )
    row = conn.execute("SELECT value FROM meta WHERE key = 'gateway_id'").fetchone()
    if row is None or row[0] != gateway_id:
        raise BufferMismatchError(
            f"{path}: this buffer belongs to gateway {row[0] if row else None!r}, "
            f"not {gateway_id!r}"
        )


@dataclass(frozen=True, slots=True)
class SalvageReport:
    """What :func:`salvage_file` read: ``pages_skipped`` of ``pages`` could not be read;
    ``failed`` lists (stream, seq) found but failing authentication."""

    pages: int
    pages_skipped: int
    found: int
    failed: list[tuple[Stream, int]]


def salvage_file(
    *, path: Path, key_file: Path, gateway_id: str
) -> tuple[list[StoredRecord], SalvageReport]:
    """Every record of a damaged database file (and its ``-wal``) that still authenticates,
    by stream and seq, read without SQLite. Raises :class:`BufferKeyError` for the key file
    and :class:`BufferIOError` when there is no file."""
    if not path.is_file():
        raise BufferIOError(f"{path}: no such file")
    keys = KeyRing.from_key_file(key_file)
    found = scan_file(path, path.with_name(path.name + "-wal"), keys, gateway_id)
    out: list[StoredRecord] = []
    for (stream, seq), rec in sorted(found.records.items()):
        aad = crypto.associated_data(gateway_id, stream, seq, rec.created_ms, rec.key_id)
        body = crypto.unpack(keys.get(rec.key_id).open(rec.nonce, rec.sealed, aad))
        out.append(
            StoredRecord(
                stream,
                seq,
                rec.created_ms,
                _STATES[rec.state],
                rec.reason,
                rec.settled_ms,
                rec.key_id,
                body,
                None,
            )
        )
    report = SalvageReport(found.pages, found.pages_skipped, len(out), sorted(found.failed))
    return out, report
