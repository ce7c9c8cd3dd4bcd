"""Helpers that damage buffer files the way disks and people do (shared by the buffer tests)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from buffer import Report, SeqGap, Store, Stream

__all__ = [
    "crash_copy",
    "flip",
    "gaps_of",
    "write_private",
]

PAGE = 4096
WAL_HEADER, FRAME_HEADER = 32, 24


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` with mode 0600 (the store refuses buffer files open to others)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def flip(path: Path, offsets: list[int]) -> None:
    data = bytearray(path.read_bytes())
    for off in offsets:
        data[off] ^= 0xFF
    write_private(path, bytes(data))


def crash_copy(src_db: Path, dst_dir: Path, *, wal_bytes: int | None = None) -> Path:
    """Copy an *open* store's files as a crash would leave them (the page cache as it is now):
    database, -wal (cut to ``wal_bytes`` to emulate a power cut), ledger and key file."""
    dst_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for suffix in ("", "-wal", ".ledger"):
        src = src_db.with_name(src_db.name + suffix)
        if src.exists():
            data = src.read_bytes()
            if suffix == "-wal" and wal_bytes is not None:
                data = data[:wal_bytes]
            write_private(dst_dir / (src_db.name + suffix), data)
    return dst_dir / src_db.name


def gaps_of(reports: list[Report], stream: Stream | None = None) -> list[SeqGap]:
    return [r for r in reports if isinstance(r, SeqGap) and (stream is None or r.stream is stream)]


def copy_key(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    shutil.copy2(src, dst)


def covered(store: Store, stream: Stream, seqs: set[int], last: int) -> list[int]:
    """Seqs of ``1..last`` neither in ``seqs`` nor inside a pending gap of ``stream``."""
    gaps = gaps_of(store.pending_reports(), stream)
    return [
        q
        for q in range(1, last + 1)
        if q not in seqs and not any(g.from_seq <= q <= g.to_seq for g in gaps)
    ]
