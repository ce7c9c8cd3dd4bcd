"""How much room the database has left, and the ballast file that keeps the reserve real.

The store keeps a *reserve* for alarms and events (and for the writes that settle, release or
evict records, which need WAL space too). Two mechanisms keep it:

- **The room check.** A telemetry append is refused (``BufferFullError``, nothing stored) once
  the room left after it would fall below the part of the reserve the ballast does not hold.
  Room counts free pages inside the file (SQLite reuses them before growing the file) plus the
  file system's space for unprivileged users (``statvfs`` ``f_bavail``), capped by ``PRAGMA
  max_page_count``, minus what the WAL may still grow by before its next automatic checkpoint.
  It is an estimate: an append is charged twice its accounted bytes (WAL, then database).
- **The ballast** ``<db>.reserve``: a file of ``reserve_bytes`` allocated (``posix_fallocate``)
  while the disk has room. It is a file, so the reserve survives restarts and cannot be eaten
  by another process filling the disk, or by a WAL that had to start again from an empty file
  (free pages *inside* the database do not help a WAL that needs new blocks). When any write
  but a telemetry append meets a full disk, the store deletes the ballast and retries once;
  ``maintain`` allocates it again once the file system has three times its size free.

Invariants: the ballast only exists at its full size (written to a temporary name, then
renamed); the room check never counts the ballast as room.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Ballast", "Room", "measure_room"]

_WAL_FRAME_HEADER = 24


@dataclass(frozen=True, slots=True)
class Room:
    """``total``: bytes the database can still grow by; ``fs_free``: the file system's free
    bytes for unprivileged users; ``disk_bound``: the disk (not ``max_page_count``) is what
    limits ``total``."""

    total: int
    fs_free: int
    disk_bound: bool


def measure_room(conn: sqlite3.Connection, db_path: Path) -> Room:
    """See the module docstring. Raises ``OSError`` and ``sqlite3.Error``."""
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
    fs_free = st.f_bavail * st.f_frsize
    inside = free_pages * page_size
    disk = fs_free - wal_growth + inside
    limit = (max_pages - page_count) * page_size + inside
    return Room(max(0, min(disk, limit)), fs_free, disk <= limit)


class Ballast:
    """The reserve as a file (see the module docstring). One thread (the store's)."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size
        try:
            self.held = size if size and path.stat().st_size >= size else 0
        except FileNotFoundError:
            self.held = 0
        self.released = 0
        """How many times it was given up for a full disk (since open)."""

    def restore(self, fs_free: int) -> bool:
        """Allocate the ballast when the disk has room for it three times over; False when it
        was not (also when the file system refuses: the room check alone then keeps the
        reserve, as it would without a ballast)."""
        if not self.size or self.held or fs_free < 3 * self.size:
            return False
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            tmp.unlink(missing_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            return False
        self.held = self.size
        return True

    def release(self) -> bool:
        """Give the space back to the file system; False when there was none to give."""
        if not self.held:
            return False
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            return False
        self.held = 0
        self.released += 1
        return True
