"""Opening a store: lock-free checks, the database, the keys, the seq ledger and the
accounting of everything a loss left behind, into one :class:`buffer.core.Core`.

Invariants:
- Nothing is written before the read-only checks pass: every buffer file must be private
  (mode 0600), the ledger must be this gateway's, the database this gateway's and not newer.
- The ledger on disk is marked unclean (with ceilings covering everything known) before the
  open returns, so any later crash is detected; what the previous run left in the WAL is
  fsynced before anything from it may be leased.
- Any failure closes what was opened and raises a translated error (:mod:`buffer.errors`).
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from buffer.core import Core
from buffer.errors import BufferMismatchError, from_os_error, from_sqlite
from buffer.keyring import KeyRing
from buffer.ledger import Ledger, check_private, ledger_path
from buffer.record import Stream
from buffer.recovery import OpenReport, reconcile
from buffer.schema import open_database
from buffer.space import Ballast
from buffer.stats import StreamLimit

__all__ = ["Settings", "open_core"]

_MS_PER_DAY = 86_400_000


@dataclass(frozen=True, slots=True)
class Settings:
    """What :meth:`buffer.Store.open` was given (kept for :meth:`buffer.Store.recover`)."""

    path: Path
    key_file: Path
    gateway_id: str
    cipher: Literal["aes-256-gcm", "sm4-gcm"]
    retention_days: float
    capacity_bytes: int
    stream_limits: Mapping[Stream, StreamLimit]
    reserve_bytes: int
    max_file_bytes: int | None
    clock_ms: Callable[[], int]
    monotonic: Callable[[], float]


def open_core(
    cfg: Settings, *, detected: Literal["open", "running"], force_aside: bool
) -> tuple[Core, OpenReport]:
    path = cfg.path
    for suffix in ("", "-wal", "-shm"):
        check_private(path.with_name(path.name + suffix), "buffer database file")
    ledger_file = ledger_path(path)
    previous = Ledger.load(ledger_file, cfg.gateway_id, cfg.monotonic)
    keep_wal = not (isinstance(previous, Ledger) and previous.clean)
    # a ledger of this gateway beside the file says the buffer lived there, header or not
    ours = isinstance(previous, Ledger)
    opened = open_database(
        path, now_ms=cfg.clock_ms(), keep_wal=keep_wal, force_aside=force_aside, ours=ours
    )
    conn = opened.conn
    try:
        if opened.moved_to is not None and cfg.key_file.exists():
            # The moved-aside records stay readable even after keys are pruned here.
            shutil.copy2(cfg.key_file, opened.moved_to.with_name(opened.moved_to.name + ".key"))
        _bind_gateway(conn, path, cfg.gateway_id)
        keys = KeyRing.load(conn, cfg.key_file, cfg.cipher, cfg.clock_ms())
        if cfg.max_file_bytes is not None:
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {max(1, cfg.max_file_bytes // page_size)}")
        limits = {s: cfg.stream_limits.get(s, StreamLimit()) for s in Stream}
        core = Core(
            conn=conn,
            keys=keys,
            gateway=cfg.gateway_id,
            path=path,
            clock_ms=cfg.clock_ms,
            ledger=Ledger(path=ledger_file, gateway=cfg.gateway_id, marks={}, clean=False),
            ballast=Ballast(path.with_name(path.name + ".reserve"), cfg.reserve_bytes),
            retention_ms={
                s: int((lim.retention_days or cfg.retention_days) * _MS_PER_DAY)
                for s, lim in limits.items()
            },
            stream_capacity={s: lim.capacity_bytes for s, lim in limits.items()},
            capacity=cfg.capacity_bytes,
            reserve=cfg.reserve_bytes,
            monotonic=cfg.monotonic,
        )
        core.load_counters()
        ledger, report = reconcile(core, opened, previous, detected=detected)
        ledger = Ledger(
            path=ledger_file,
            gateway=cfg.gateway_id,
            marks=ledger.marks,
            clean=False,
            monotonic=cfg.monotonic,
        )
        ledger.generation = previous.generation if isinstance(previous, Ledger) else 0
        core.ledger = ledger
        core.load_counters()
        core.sync()  # what the previous run left in the WAL is on disk from here on
        for stream, mark in ledger.marks.items():
            mark.durable = core.durable[stream]
        ledger.write()
        core.ballast.restore(core.room().fs_free)
    except BaseException as exc:
        conn.close()
        if isinstance(exc, sqlite3.Error):
            raise from_sqlite(exc, f"{path}: opening the buffer") from exc
        if isinstance(exc, OSError):
            raise from_os_error(exc, f"{path}: opening the buffer") from exc
        raise
    return core, report


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
