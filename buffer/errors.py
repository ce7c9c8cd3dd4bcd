"""The buffer's exceptions, named by remedy, and the one place SQLite errors are translated.

::

    StoreError                       base of everything the buffer raises on purpose
    ├── BufferNeedsHumanError        needs a human: retrying cannot help
    │   ├── BufferKeyError           key file unsafe (group/other bits), unreadable, malformed,
    │   │                            missing while records need it, or not the key the records
    │   │                            were sealed with
    │   ├── BufferMismatchError      the database or seq ledger belongs to another gateway id, or
    │   │                            was written by a newer schema version than this agent knows
    │   └── BufferPermissionError    the database, its -wal/-shm or the seq ledger is readable or
    │                                writable by group/others
    ├── BufferTransientError         retry with backoff; nothing was changed by the failed call
    │   ├── BufferFullError          the disk is full (SQLITE_FULL / ENOSPC)
    │   ├── BufferInUseError         another process holds the buffer's lock file
    │   └── BufferIOError            any other I/O failure (SQLITE_IOERR, CANTOPEN, BUSY, ...)
    └── BufferPermanentError         permanent: do not retry this call
        ├── BufferCorruptError       the database went corrupt while open (it is moved aside on
        │                            the next open)
        ├── BufferClosedError        the store was used after close()
        └── RecordAuthError          one record failed authentication (the store quarantines it;
                                     it never escapes the public API)

The base was called ``BufferError`` until it was renamed: that name shadows a Python builtin.
"""

from __future__ import annotations

import errno
import sqlite3

__all__ = [
    "BufferClosedError",
    "BufferCorruptError",
    "BufferFullError",
    "BufferIOError",
    "BufferInUseError",
    "BufferKeyError",
    "BufferMismatchError",
    "BufferNeedsHumanError",
    "BufferPermanentError",
    "BufferPermissionError",
    "BufferTransientError",
    "RecordAuthError",
    "StoreError",
    "from_os_error",
    "from_sqlite",
]


class StoreError(Exception):
    """Base of every error the buffer raises on purpose."""


class BufferNeedsHumanError(StoreError):
    """Retrying cannot help: a person must fix the key file, the config or the database."""


class BufferKeyError(BufferNeedsHumanError):
    """The key file is unsafe, unreadable, malformed, missing, or does not match the records."""


class BufferMismatchError(BufferNeedsHumanError):
    """The database belongs to another gateway or to a newer schema version."""


class BufferPermissionError(BufferNeedsHumanError):
    """A buffer file (database, -wal, -shm, seq ledger) is open to group/others."""


class BufferTransientError(StoreError):
    """Retry later; the failed call changed nothing."""


class BufferFullError(BufferTransientError):
    """The disk (or the database's size limit) is full."""


class BufferInUseError(BufferTransientError):
    """Another process holds the buffer (e.g. an agent instance still shutting down)."""


class BufferIOError(BufferTransientError):
    """An I/O failure other than a full disk."""


class BufferPermanentError(StoreError):
    """Do not retry this call."""


class BufferCorruptError(BufferPermanentError):
    """The open database is corrupt; reopening the store moves it aside."""


class BufferClosedError(BufferPermanentError):
    """The store was used after :meth:`Store.close`."""


class RecordAuthError(BufferPermanentError):
    """One sealed record failed authentication or decoding (quarantined by the store)."""


_CORRUPT = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB
_FULL = 13  # SQLITE_FULL


def from_sqlite(exc: sqlite3.Error, doing: str) -> StoreError:
    """Translate a SQLite error raised while ``doing`` into the buffer's tree (caller chains it).

    Corruption and a full disk have their own classes; everything else is a transient I/O error.
    """
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    message = f"{doing}: {exc}"
    if primary in _CORRUPT:
        return BufferCorruptError(message)
    if primary == _FULL:
        return BufferFullError(message)
    return BufferIOError(message)


def from_os_error(exc: OSError, doing: str) -> StoreError:
    """Translate an OS error raised while ``doing`` (caller chains it)."""
    message = f"{doing}: {exc}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return BufferFullError(message)
    return BufferIOError(message)
