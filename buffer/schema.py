"""On-disk format of the buffer database, its migrations, and recovery from a corrupt file.

Invariants:
- The file is SQLite in WAL mode with ``auto_vacuum=INCREMENTAL``; ``PRAGMA application_id`` is
  :data:`APPLICATION_ID` and ``PRAGMA user_version`` the schema version. ``synchronous`` is set
  on every open (NORMAL; the store raises it to FULL around alarm commits).
- A file that SQLite calls corrupt, that fails ``PRAGMA quick_check`` or misses tables is
  never written to. When it is one of the buffer's own databases (:func:`is_own_database`: the
  SQLite header and :data:`APPLICATION_ID` in it) it is renamed, with its ``-wal`` and ``-shm``
  companions, to ``<name>.corrupt-<UTC yyyymmddThhmmssZ>`` and a fresh database is created.
  Any other file (another application's database, a text file, a header too damaged to tell)
  is neither moved nor overwritten: :class:`BufferMismatchError` names it (needs a human). An
  empty file, or an SQLite database with no table and no application id, is a fresh database.
  A database from a newer schema version is refused (needs a human), not moved.
- No plaintext payload is ever stored: payloads are sealed (see :mod:`buffer.crypto`).

Schema version 1::

    meta(key TEXT PRIMARY KEY, value TEXT)          gateway_id, created_ms
    streams(stream INTEGER PRIMARY KEY,             one row per Stream value
            last_seq, evicted, dead, quarantined)   counters survive eviction and restarts;
                                                    last_seq is never decreased
    keys(key_id INTEGER PRIMARY KEY, cipher,        one row per key ever used; check_* is a
         check_nonce, check_sealed, sealed_count,   sealed known value proving the key file
         created_ms)                                holds the same key
    records(id INTEGER PRIMARY KEY,                 one row per retained record
            stream, seq, created_ms, key_id,        UNIQUE(stream, seq)
            nonce, sealed, size,                    size = accounted bytes (see store)
            state, reason, settled_ms)              state 0 undelivered, 1 delivered, 2 dead
    quarantine(id INTEGER PRIMARY KEY,              records that failed authentication, kept
               stream, seq, created_ms, key_id,     sealed for a human until retention
               nonce, sealed, reason, at_ms)

Indexes: ``records_pending(stream, seq) WHERE state = 0`` (leasing),
``records_pending_age(stream, created_ms) WHERE state = 0`` (retention, oldest undelivered),
``records_done(created_ms) WHERE state <> 0`` (eviction of delivered records first).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from buffer.errors import (
    BufferCorruptError,
    BufferIOError,
    BufferMismatchError,
    from_os_error,
    from_sqlite,
)

__all__ = ["APPLICATION_ID", "MIGRATIONS", "SCHEMA_VERSION", "is_own_database", "open_database"]

APPLICATION_ID = 0x53454442  # "SEDB"
SCHEMA_VERSION = 1

_V1: Sequence[str] = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE streams (
        stream INTEGER PRIMARY KEY,
        last_seq INTEGER NOT NULL DEFAULT 0,
        evicted INTEGER NOT NULL DEFAULT 0,
        dead INTEGER NOT NULL DEFAULT 0,
        quarantined INTEGER NOT NULL DEFAULT 0)""",
    """CREATE TABLE keys (
        key_id INTEGER PRIMARY KEY,
        cipher TEXT NOT NULL,
        check_nonce BLOB NOT NULL,
        check_sealed BLOB NOT NULL,
        sealed_count INTEGER NOT NULL DEFAULT 0,
        created_ms INTEGER NOT NULL)""",
    """CREATE TABLE records (
        id INTEGER PRIMARY KEY,
        stream INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        created_ms INTEGER NOT NULL,
        key_id INTEGER NOT NULL,
        nonce BLOB NOT NULL,
        sealed BLOB NOT NULL,
        size INTEGER NOT NULL,
        state INTEGER NOT NULL DEFAULT 0,
        reason TEXT,
        settled_ms INTEGER,
        UNIQUE (stream, seq))""",
    "CREATE INDEX records_pending ON records(stream, seq) WHERE state = 0",
    "CREATE INDEX records_pending_age ON records(stream, created_ms) WHERE state = 0",
    "CREATE INDEX records_done ON records(created_ms) WHERE state <> 0",
    """CREATE TABLE quarantine (
        id INTEGER PRIMARY KEY,
        stream INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        created_ms INTEGER NOT NULL,
        key_id INTEGER NOT NULL,
        nonce BLOB NOT NULL,
        sealed BLOB NOT NULL,
        reason TEXT NOT NULL,
        at_ms INTEGER NOT NULL)""",
    "CREATE INDEX quarantine_age ON quarantine(created_ms)",
    "INSERT INTO streams(stream) VALUES (0), (1), (2)",
)

# MIGRATIONS[v] takes a database from version v to v + 1.
MIGRATIONS: dict[int, Sequence[str]] = {0: _V1}
_TABLES = frozenset({"meta", "streams", "keys", "records", "quarantine"})


class _UnusableError(Exception):
    """The file is corrupt or foreign: move it aside."""


def _enter_wal(conn: sqlite3.Connection, path: Path) -> None:
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise BufferIOError(f"{path}: cannot enter WAL mode (got {mode!r})")


def open_database(path: Path, *, now_ms: int) -> tuple[sqlite3.Connection, Path | None]:
    """Open (creating or migrating) the database; returns it and where a bad file was moved.

    Raises :class:`BufferMismatchError` for a newer schema and transient errors for I/O
    failures; a corrupt or foreign file is moved aside instead of raising.
    """
    try:
        return _open_checked(path), None
    except _UnusableError as exc:
        if not is_own_database(path):
            raise BufferMismatchError(
                f"{path}: not a SafeEdge buffer database ({exc}); it is left untouched: "
                "point buffer.path at another file, or move this one away yourself"
            ) from exc
        moved = _move_aside(path, now_ms)
        try:
            return _open_checked(path), moved
        except _UnusableError as exc:
            raise BufferCorruptError(f"{path}: a freshly created database is unusable") from exc


_SQLITE_MAGIC = b"SQLite format 3\x00"
_APP_ID_OFFSET = 68  # big-endian 32-bit application_id in the 100-byte SQLite header


def is_own_database(path: Path) -> bool:
    """True when ``path`` starts with an SQLite header carrying :data:`APPLICATION_ID`, i.e. it
    is one of the buffer's databases (possibly damaged further on). Reads 100 bytes; False
    when it cannot be read, is shorter than the header or is anything else. Never writes."""
    try:
        with path.open("rb") as f:
            head = f.read(100)
    except OSError:
        return False
    if len(head) < 100 or not head.startswith(_SQLITE_MAGIC):
        return False
    return int.from_bytes(head[_APP_ID_OFFSET : _APP_ID_OFFSET + 4], "big") == APPLICATION_ID


def _open_checked(path: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(path, isolation_level=None)  # transactions are explicit
    except sqlite3.Error as exc:
        raise _translate(exc, f"{path}: open") from exc
    try:
        _check_and_migrate(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _translate(exc: sqlite3.Error, doing: str) -> BaseException:
    err = from_sqlite(exc, doing)
    return _UnusableError(doing) if isinstance(err, BufferCorruptError) else err


def _check_and_migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Read-only checks first: a foreign or newer file must not be written to (not even the
    journal mode in its header)."""
    try:
        conn.execute("PRAGMA busy_timeout = 2000")
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        fresh = _is_empty(conn) and app_id == 0 and version == 0
        if not fresh and app_id != APPLICATION_ID:
            raise _UnusableError(f"{path}: application_id {app_id:#x} is not a SafeEdge buffer")
        if version > SCHEMA_VERSION:
            raise BufferMismatchError(
                f"{path}: schema version {version} is newer than this agent's "
                f"{SCHEMA_VERSION}; upgrade the agent or move the database aside"
            )
        if fresh:
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # only before the first table
        _enter_wal(conn, path)
        conn.execute("PRAGMA synchronous = NORMAL")
        if fresh:
            _migrate(conn, 0)
            return
        check = conn.execute("PRAGMA quick_check").fetchall()
        if check != [("ok",)]:
            raise _UnusableError(f"{path}: quick_check failed: {check[:3]}")
        if version < SCHEMA_VERSION:
            _migrate(conn, version)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables >= _TABLES:
            raise _UnusableError(f"{path}: tables missing: {sorted(_TABLES - tables)}")
    except sqlite3.Error as exc:
        raise _translate(exc, f"{path}: check") from exc


def _migrate(conn: sqlite3.Connection, version: int) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        while version < SCHEMA_VERSION:
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
            version += 1
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {version}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _is_empty(conn: sqlite3.Connection) -> bool:
    count: int = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    return count == 0


def _move_aside(path: Path, now_ms: int) -> Path:
    """Rename the database and its WAL/SHM companions with a timestamp suffix; return the new
    database path (which may not exist if only companions were there)."""
    stamp = dt.datetime.fromtimestamp(now_ms / 1000, tz=dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    try:
        for suffix in ("", "-wal", "-shm"):
            src = path.with_name(path.name + suffix)
            if src.exists():
                src.replace(target.with_name(target.name + suffix))
    except OSError as exc:
        raise from_os_error(exc, f"{path}: moving the corrupt database aside") from exc
    return target
