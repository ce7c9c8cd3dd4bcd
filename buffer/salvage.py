"""Salvage: the records that still authenticate in a damaged database and its WAL.

Invariants:
- Only a record that decrypts and verifies under a key of the key file is taken. The AEAD's
  associated data binds gateway, stream, seq, creation time and key id, so a garbage parse
  never becomes a record and a salvaged record keeps its original stream, seq and id.
- One copy per (stream, seq). States only move away from undelivered, so a copy saying
  delivered or dead wins over an undelivered one; if only a stale undelivered copy survived,
  the record is sent again under its original id (a duplicate, never a different content).
- Reads only and never raises on bad bytes: a missing or unreadable file is an empty scan;
  pages and cells that do not parse are skipped and counted (see :mod:`buffer.pages`).
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from buffer import crypto
from buffer.errors import RecordAuthError
from buffer.keyring import KeyRing
from buffer.pages import PageFile, Value
from buffer.record import Stream

__all__ = ["Salvaged", "Scan", "scan", "scan_file"]

_STREAMS = frozenset(int(s) for s in Stream)


@dataclass(frozen=True, slots=True)
class Salvaged:
    """One authenticated row, as stored (still sealed)."""

    stream: Stream
    seq: int
    created_ms: int
    key_id: int
    nonce: bytes
    sealed: bytes
    size: int
    state: int
    reason: str | None
    settled_ms: int | None


@dataclass(slots=True)
class Scan:
    """What a scan found. ``failed`` maps a (stream, seq) that was found but did not verify to
    the state its row claimed; ``last_seq`` is the highest ``streams.last_seq`` seen."""

    records: dict[tuple[Stream, int], Salvaged] = field(default_factory=dict)
    failed: dict[tuple[Stream, int], int] = field(default_factory=dict)
    pages: int = 0
    pages_skipped: int = 0
    last_seq: dict[Stream, int] = field(default_factory=lambda: dict.fromkeys(Stream, 0))

    def max_seq(self, stream: Stream) -> int:
        seen = [q for s, q in self.records if s is stream]
        return max([self.last_seq[stream], *seen])


@contextmanager
def _mapped(path: Path | None) -> Iterator[bytes | mmap.mmap]:
    if path is None:
        yield b""
        return
    try:
        with path.open("rb") as f:
            try:
                view = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except ValueError:  # empty file
                yield b""
                return
            with view:
                yield view
    except OSError:
        yield b""


def scan_file(db: Path | None, wal: Path | None, keys: KeyRing, gateway: str) -> Scan:
    """Scan a (moved-aside or damaged) database file and its WAL file."""
    try:
        wal_bytes = wal.read_bytes() if wal is not None and wal.exists() else None
    except OSError:
        wal_bytes = None
    with _mapped(db) as image:
        return scan(image, wal_bytes, keys, gateway)


def scan(
    db: bytes | mmap.mmap,
    wal: bytes | None,
    keys: KeyRing,
    gateway: str,
    *,
    wal_from: int = 0,
    include_db: bool = True,
) -> Scan:
    """Scan database bytes and WAL bytes (only WAL frames from index ``wal_from``; the file's
    pages only with ``include_db``) for records that authenticate."""
    pf = PageFile(db=db, wal=wal, wal_from=wal_from, include_db=include_db)  # type: ignore[arg-type]
    out = Scan()
    for rowid, values in pf.rows():
        if len(values) == 11:
            _take_record(out, values, keys, gateway)
        elif len(values) in (5, 10) and values[0] is None and rowid in _STREAMS:
            _take_streams_row(out, Stream(rowid), values)
    out.pages = pf.pages
    out.pages_skipped = pf.skipped
    return out


def _take_streams_row(out: Scan, stream: Stream, values: list[Value]) -> None:
    # Unverified (the streams table is not sealed): used only to widen a gap, never to
    # narrow one, and capped so garbage cannot push seqs towards overflow.
    last = values[1]
    if (
        isinstance(last, int)
        and 0 <= last < 1 << 48
        and all(isinstance(x, int) for x in values[1:5])
    ):
        out.last_seq[stream] = max(out.last_seq[stream], last)


def _take_record(out: Scan, v: list[Value], keys: KeyRing, gateway: str) -> None:
    _, stream, seq, created, key_id, nonce, sealed, size, state, reason, settled = v
    if not (
        isinstance(stream, int)
        and stream in _STREAMS
        and isinstance(seq, int)
        and isinstance(created, int)
        and isinstance(key_id, int)
        and isinstance(nonce, bytes)
        and isinstance(sealed, bytes)
        and isinstance(size, int)
        and isinstance(state, int)
        and state in (0, 1, 2)
        and (reason is None or isinstance(reason, str))
        and (settled is None or isinstance(settled, int))
    ):
        return
    key = (Stream(stream), seq)
    try:
        aad = crypto.associated_data(gateway, stream, seq, created, key_id)
        crypto.unpack(keys.get(key_id).open(nonce, sealed, aad))
    except (RecordAuthError, ValueError, OverflowError):
        if key not in out.records:
            out.failed[key] = max(out.failed.get(key, 0), state)
        return
    out.failed.pop(key, None)
    old = out.records.get(key)
    if old is not None and old.state != 0:
        return
    out.records[key] = Salvaged(
        Stream(stream), seq, created, key_id, nonce, sealed, size, state, reason, settled
    )
