"""How much room the database has left before SQLite reports SQLITE_FULL.

The store keeps a *reserve* for alarms and events: a telemetry append is refused (with
:class:`buffer.BufferFullError`, nothing stored) once the room left after it would fall below the
reserve, so the last ``reserve`` bytes of the disk (or of the file's size limit) stay free for
alarms and events, which are never refused by this check; they fail only on a genuine
SQLITE_FULL / ENOSPC, which the store translates into the same error.

Room counts free pages inside the file (SQLite reuses them before growing the file) plus the
file system's space available to unprivileged users (``statvfs`` ``f_bavail``), capped by
``PRAGMA max_page_count``, minus what the WAL may still grow by before its next automatic
checkpoint (``wal_autocheckpoint`` pages; the WAL file is reused, not shrunk, after a
checkpoint). It is an estimate: an append is charged twice its accounted bytes (its pages are
written to the WAL, then to the database).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

__all__ = ["room_bytes"]


_WAL_FRAME_HEADER = 24


def room_bytes(conn: sqlite3.Connection, db_path: Path) -> int:
    """Bytes the database at ``db_path`` can still grow by (see the module docstring). Raises
    ``OSError`` (statvfs) and ``sqlite3.Error``; the caller translates them."""
    page_size: int = conn.execute("PRAGMA page_size").fetchone()[0]
    page_count: int = conn.execute("PRAGMA page_count").fetchone()[0]
    free_pages: int = conn.execute("PRAGMA freelist_count").fetchone()[0]
    max_pages: int = conn.execute("PRAGMA max_page_count").fetchone()[0]
    wal_pages: int = conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
    try:
        wal_now = os.stat(db_path.with_name(db_path.name + "-wal")).st_size
    except FileNotFoundError:
        wal_now = 0
    wal_growth = max(0, wal_pages * (page_size + _WAL_FRAME_HEADER) - wal_now)
    st = os.statvfs(db_path.parent)
    inside = free_pages * page_size
    disk = st.f_bavail * st.f_frsize - wal_growth + inside
    limit = (max_pages - page_count) * page_size + inside
    return max(0, min(disk, limit))
