"""On-disk format of the buffer database, its migrations, and recovery from a corrupt file.

Invariants:
- The file is SQLite in WAL mode with ``auto_vacuum=INCREMENTAL``; ``PRAGMA application_id`` is
  :data:`APPLICATION_ID` and ``PRAGMA user_version`` the schema version. ``synchronous`` is set
  on every open (NORMAL; the store raises it to FULL around alarm commits).
- A file that SQLite calls corrupt (or "not a database"), that fails ``PRAGMA quick_check`` or
  misses tables is never written to. When it is one of the buffer's own databases
  (:func:`is_own_database`: the SQLite header and :data:`APPLICATION_ID` in it, or — a header
  too damaged to tell — the caller knows the buffer lived there, because its seq ledger is
  beside it: ``ours``) it is renamed, with its ``-wal`` and ``-shm`` companions, to
  ``<name>.corrupt-<UTC yyyymmddThhmmssZ>`` and a fresh database is created. Any other file
  (another application's database, a text file) is neither moved nor overwritten:
  :class:`BufferMismatchError` names it (needs a human). An empty file, or an SQLite database
  with no table and no application id, is a fresh database. A database from a newer schema
  version is refused (needs a human), not moved.
- The database file is created mode 0600 before SQLite opens it (SQLite gives ``-wal`` and
  ``-shm`` the database's mode), so no buffer file is ever readable by group/others.
- Before SQLite sees a WAL left by a store that was not closed, its bytes are kept
  (:attr:`Opened.wal_snapshot`) and the number of frames SQLite recovered from it is read
  (:attr:`Opened.wal_frames`) before anything is written: frames SQLite dropped (a flipped
  byte drops that frame and every later one) can then be found and salvaged.
- No plaintext payload is ever stored: payloads are sealed (see :mod:`buffer.crypto`).

Schema version 2 (version 1 plus the ``incident`` stream's row in ``streams``)::

    meta(key TEXT PRIMARY KEY, value TEXT)          gateway_id, created_ms
    streams(stream INTEGER PRIMARY KEY,             one row per Stream value (0..3)
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

Additions of the seq-ledger era, made in place on any version-2 file that lacks them (they do
not change the version: an older agent ignores them, so a rollback still opens the file): in
``streams`` the refusal counters (``refused`` total; ``refused_pending``,
``refused_first_ms``, ``refused_last_ms``, ``refused_reason`` not yet reported) and the table
``reports(id INTEGER PRIMARY KEY, body TEXT)`` of reports not yet turned into events (see
:mod:`buffer.reports`). A file without ``reports`` before the open comes from before the
ledger (:attr:`Opened.ledger_era` is false): its ledger is started without a gap.

Made in place the same way (an older agent ignores it): ``state(key TEXT PRIMARY KEY, key_id,
nonce, sealed, updated_ms)``, opaque sealed values written in an append's transaction (see
:mod:`buffer.kvstate`); and ``settled(stream, first_seq, last_seq, settled_ms, PRIMARY KEY
(stream, last_seq))``, when runs of records were delivered: settling a delivered record changes
only its ``state`` (a row of the same size, which SQLite rewrites in place without touching the
sealed payload's overflow pages), so its ``settled_ms`` stays NULL and the time is in
``settled`` (read back by :class:`buffer.StoreReader`; ranges below a stream's oldest record are
pruned when settling). Dead-lettered records keep ``reason`` and ``settled_ms`` in their row.

Indexes: ``records_pending(stream, seq) WHERE state = 0`` (leasing),
``records_pending_age(stream, created_ms) WHERE state = 0`` (retention, oldest undelivered),
``records_done(created_ms) WHERE state <> 0`` (eviction of delivered records first).
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from buffer.errors import (
    BufferCorruptError,
    BufferIOError,
    BufferMismatchError,
    from_os_error,
    from_sqlite,
)

__all__ = [
    "APPLICATION_ID",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Opened",
    "is_own_database",
    "open_database",
]

APPLICATION_ID = 0x53454442  # "SEDB"
SCHEMA_VERSION = 2
_WAL_SNAPSHOT_MAX = 256 << 20

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

# Version 2: the incident stream (Stream.INCIDENT = 3) gets its seq/counter row.
_V2: Sequence[str] = ("INSERT INTO streams(stream) VALUES (3)",)

# The seq-ledger era's additions (see the module docstring): (column, declaration).
_STREAM_COLUMNS: Sequence[tuple[str, str]] = (
    ("refused", "INTEGER NOT NULL DEFAULT 0"),
    ("refused_pending", "INTEGER NOT NULL DEFAULT 0"),
    ("refused_first_ms", "INTEGER"),
    ("refused_last_ms", "INTEGER"),
    ("refused_reason", "TEXT"),
)
_REPORTS = "CREATE TABLE IF NOT EXISTS reports (id INTEGER PRIMARY KEY, body TEXT NOT NULL)"
_STATE = """CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY,
    key_id INTEGER NOT NULL,
    nonce BLOB NOT NULL,
    sealed BLOB NOT NULL,
    updated_ms INTEGER NOT NULL)"""
_SETTLED = """CREATE TABLE IF NOT EXISTS settled (
    stream INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    settled_ms INTEGER NOT NULL,
    PRIMARY KEY (stream, last_seq)) WITHOUT ROWID"""

# MIGRATIONS[v] takes a database from version v to v + 1.
MIGRATIONS: dict[int, Sequence[str]] = {0: _V1, 1: _V2}
_TABLES = frozenset({"meta", "streams", "keys", "records", "quarantine", "reports", "state"})


@dataclass(frozen=True, slots=True)
class Opened:
    """What :func:`open_database` found. ``version_before`` is the schema version the file
    had (0: a fresh, empty database); ``moved_to`` where an unusable file went;
    ``ledger_era``: the file already had the seq-ledger era's additions."""

    conn: sqlite3.Connection
    moved_to: Path | None
    version_before: int
    wal_snapshot: bytes | None
    wal_frames: int | None
    ledger_era: bool = True


class _UnusableError(Exception):
    """The file is corrupt or foreign: move it aside."""


def _enter_wal(conn: sqlite3.Connection, path: Path) -> None:
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise BufferIOError(f"{path}: cannot enter WAL mode (got {mode!r})")


def open_database(
    path: Path, *, now_ms: int, keep_wal: bool, force_aside: bool = False, ours: bool = False
) -> Opened:
    """Open (creating or migrating) the database. ``keep_wal``: snapshot a leftover WAL first
    (the store was not closed); ``force_aside``: move the file aside even if it checks out
    (corruption was seen while it was open); ``ours``: the buffer's seq ledger is beside the file,
    so it is the buffer's own even when its header is too damaged to say so.

    Raises :class:`BufferMismatchError` for a newer schema or a file that is not the buffer's
    (left untouched), and transient errors for I/O failures; a corrupt database of the buffer's
    own is moved aside instead of raising.
    """
    snapshot = _wal_snapshot(path) if keep_wal else None
    if not force_aside:
        try:
            conn, version, frames, era = _open_checked(path)
        except _UnusableError as exc:
            if not (ours or is_own_database(path)):
                raise BufferMismatchError(
                    f"{path}: not a SafeEdge buffer database ({exc}); it is left untouched: "
                    "point buffer.path at another file, or move this one away yourself"
                ) from exc
        else:
            return Opened(conn, None, version, snapshot, frames, era)
    moved = _move_aside(path, now_ms)
    try:
        conn, _, _, _ = _open_checked(path)
    except _UnusableError as exc:
        raise BufferCorruptError(f"{path}: a freshly created database is unusable") from exc
    return Opened(conn, moved, 0, None, None)


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


def _wal_snapshot(path: Path) -> bytes | None:
    wal = path.with_name(path.name + "-wal")
    try:
        with wal.open("rb") as f:
            data = f.read(_WAL_SNAPSHOT_MAX)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise from_os_error(exc, f"{wal}: reading the WAL") from exc
    return data if len(data) > 32 else None


def _open_checked(path: Path) -> tuple[sqlite3.Connection, int, int | None, bool]:
    try:
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        conn = sqlite3.connect(path, isolation_level=None)  # transactions are explicit
    except OSError as exc:
        raise from_os_error(exc, f"{path}: creating the database") from exc
    except sqlite3.Error as exc:
        raise _translate(exc, f"{path}: open") from exc
    try:
        version, frames, era = _check_and_migrate(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn, version, frames, era


def _translate(exc: sqlite3.Error, doing: str) -> BaseException:
    err = from_sqlite(exc, doing)
    return _UnusableError(doing) if isinstance(err, BufferCorruptError) else err


def _check_and_migrate(conn: sqlite3.Connection, path: Path) -> tuple[int, int | None, bool]:
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
            _add_ledger_era(conn)
            return 0, None, True
        frames = _recovered_frames(path)
        check = conn.execute("PRAGMA quick_check").fetchall()
        if check != [("ok",)]:
            raise _UnusableError(f"{path}: quick_check failed: {check[:3]}")
        if version < SCHEMA_VERSION:
            _migrate(conn, version)
        era = _add_ledger_era(conn)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables >= _TABLES:
            raise _UnusableError(f"{path}: tables missing: {sorted(_TABLES - tables)}")
    except sqlite3.Error as exc:
        raise _translate(exc, f"{path}: check") from exc
    return version, frames, era


def _add_ledger_era(conn: sqlite3.Connection) -> bool:
    """Add what the seq-ledger era needs (and the ``state`` and ``settled`` tables), where
    missing; True when the seq-ledger era's additions were already there."""
    had = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'reports'").fetchone()
    has_state = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'state'").fetchone()
    has_settled = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'settled'").fetchone()
    columns = {r[1] for r in conn.execute("PRAGMA table_info(streams)")}
    missing = [(n, decl) for n, decl in _STREAM_COLUMNS if n not in columns]
    if had and has_state and has_settled and not missing:
        return True
    conn.execute("BEGIN IMMEDIATE")
    try:
        for name, decl in missing:
            conn.execute(f"ALTER TABLE streams ADD COLUMN {name} {decl}")
        conn.execute(_REPORTS)
        conn.execute(_STATE)
        conn.execute(_SETTLED)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return bool(had)


def _recovered_frames(path: Path) -> int | None:
    """How many WAL frames SQLite recovered: ``mxFrame`` of the WAL-index header (the first
    48 bytes of ``-shm``, native byte order, offset 16; SQLite's file format document), read
    after the first read transaction rebuilt it and before anything is written."""
    try:
        with path.with_name(path.name + "-shm").open("rb") as f:
            header = f.read(48)
    except OSError:
        return None
    if len(header) < 48 or header[12] != 1:  # isInit
        return None
    return int.from_bytes(header[16:20], sys.byteorder)


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
