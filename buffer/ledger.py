"""The seq ledger: a small file beside the database saying which seqs may have been handed out.

Invariants:
1. Covered before used: :meth:`Ledger.reserve` writes a ceiling at or above a seq to disk
   (fsynced) before the store writes that seq to the database. Whatever later happens to the
   database (power cut, lost or corrupt file, truncated WAL), every seq ever used is at or
   below the ledger's ``reserved`` ceiling, so continuing above it never reissues a seq.
2. Hi-lo blocks bound the fsync rate: a reservation takes ``block`` seqs beyond the need. The
   block doubles while reservations come less than :data:`MIN_INTERVAL_S` apart (up to
   :data:`MAX_BLOCK`) and halves when they are rarer than :data:`RELAX_AFTER_S`, so a stream
   causes at most one ledger fsync per :data:`MIN_INTERVAL_S` at any rate below
   ``MAX_BLOCK / MIN_INTERVAL_S`` seqs per second.
3. ``clean`` is true only while the store is closed after a clean :meth:`Store.close`: then
   ``reserved`` is exactly the last seq used and the database (checkpointed on close) holds
   everything up to it. Opening writes ``clean = false`` before the first seq is used.
4. ``durable`` is the last seq known fsynced in the database and ``low`` the first seq that was
   undelivered at the last write (every seq below it was settled, or its drop reported): both
   are lower bounds refreshed at each write, used to classify and bound gaps after a loss.
5. Atomic, and writable on a full disk: the file has two fixed slots of :data:`SLOT` bytes,
   allocated once (``posix_fallocate``, fsynced with its directory). Write number ``n`` goes
   to slot ``n % 2`` in place (``pwrite`` + ``fdatasync``): no new block is ever needed, and
   a torn write can only damage the slot being written while the other still holds the
   previous state. The reader takes the valid slot with the highest ``generation``.
6. Self-checking: a CRC-32 covers each slot's body. A ledger with no valid slot reads as
   :class:`LedgerDamaged` (the store rebuilds it from the database and reports the margin).

Slot (UTF-8 JSON padded with spaces; file mode 0600)::

    {"format": "safeedge-buffer-ledger", "version": 1, "generation": 7, "gateway": "gw-01",
     "clean": false, "streams": {"alarm": [reserved, durable, low], "event": [...],
     "telemetry": [...]}, "crc": 123456789}
"""

from __future__ import annotations

import os
import stat
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec

from buffer.errors import BufferMismatchError, BufferPermissionError, from_os_error
from buffer.record import Stream

__all__ = [
    "MAX_BLOCK",
    "MIN_BLOCK",
    "MIN_INTERVAL_S",
    "RELAX_AFTER_S",
    "Ledger",
    "LedgerDamaged",
    "Mark",
    "check_private",
    "ledger_path",
]

SLOT = 4096
MIN_BLOCK = 1024
MAX_BLOCK = 1 << 22
MIN_INTERVAL_S = 2.0
RELAX_AFTER_S = 60.0
_FORMAT = "safeedge-buffer-ledger"


class _Doc(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    format: str
    version: int
    generation: int
    gateway: str
    clean: bool
    streams: dict[str, tuple[int, int, int]]
    crc: int = 0


@dataclass(slots=True)
class Mark:
    """One stream's entry: ceiling of reserved seqs, last durable seq, first undelivered."""

    reserved: int = 0
    durable: int = 0
    low: int = 1


@dataclass(frozen=True, slots=True)
class LedgerDamaged:
    """The ledger exists but cannot be trusted (why: ``reason``)."""

    reason: str


def ledger_path(database: Path) -> Path:
    """The seq ledger kept beside the database ``database`` (its existence says the buffer lived
    there, even when the database's own header is gone or not yet written)."""
    return database.with_name(database.name + ".ledger")


def check_private(path: Path, what: str) -> None:
    """Refuse a file open to group/others, like the key file (``chmod 600`` fixes it)."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise from_os_error(exc, f"{path}: checking the {what}") from exc
    if st.st_mode & 0o077:
        raise BufferPermissionError(
            f"{path}: the {what} is readable or writable by group/others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}"
        )


def _crc(doc: _Doc) -> int:
    body = msgspec.json.encode(msgspec.structs.replace(doc, crc=0))
    return zlib.crc32(body)


class Ledger:
    """The in-memory copy of the ledger file and its writer. One thread (the store's)."""

    def __init__(
        self,
        *,
        path: Path,
        gateway: str,
        marks: dict[Stream, Mark],
        clean: bool,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.gateway = gateway
        self.marks = marks
        self.clean = clean
        self.writes = 0
        """Ledger fsyncs since this object was made (benchmarks read it)."""
        self.generation = 0
        self._fd: int | None = None
        self._monotonic = monotonic
        self._block = dict.fromkeys(Stream, MIN_BLOCK)
        self._last_reserve: dict[Stream, float | None] = dict.fromkeys(Stream, None)

    @classmethod
    def load(
        cls, path: Path, gateway: str, monotonic: Callable[[], float] = time.monotonic
    ) -> Ledger | LedgerDamaged | None:
        """The ledger at ``path``; None when there is none. Raises
        :class:`BufferMismatchError` for another gateway's ledger."""
        check_private(path, "seq ledger")
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise from_os_error(exc, f"{path}: reading the seq ledger") from exc
        docs: list[_Doc] = []
        why = "empty"
        for slot in (raw[:SLOT], raw[SLOT : 2 * SLOT]):
            try:
                doc = msgspec.json.decode(slot.rstrip(b" \x00\n"), type=_Doc)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                why = f"unreadable: {exc}"
                continue
            if doc.format != _FORMAT or doc.version != 1:
                why = f"not a version 1 {_FORMAT} file"
            elif doc.crc != _crc(doc):
                why = "checksum mismatch"
            else:
                docs.append(doc)
        if not docs:
            return LedgerDamaged(why)
        doc = max(docs, key=lambda d: d.generation)
        if doc.gateway != gateway:
            raise BufferMismatchError(
                f"{path}: this seq ledger belongs to gateway {doc.gateway!r}, not {gateway!r}"
            )
        marks = {s: Mark() for s in Stream}
        for name, (reserved, durable, low) in doc.streams.items():
            try:
                stream = Stream[name.upper()]
            except KeyError:
                return LedgerDamaged(f"unknown stream {name!r}")
            if min(reserved, durable) < 0 or low < 1:
                return LedgerDamaged(f"negative seq for {name}")
            marks[stream] = Mark(reserved, durable, low)
        ledger = cls(path=path, gateway=gateway, marks=marks, clean=doc.clean, monotonic=monotonic)
        ledger.generation = doc.generation
        return ledger

    def reserve(self, stream: Stream, need: int) -> bool:
        """Make sure ``need`` is covered (invariant 1); True when the file was written.
        Raises ``OSError`` (the caller translates it; nothing may then use the seqs)."""
        mark = self.marks[stream]
        if need <= mark.reserved and not self.clean:
            return False
        now = self._monotonic()
        last = self._last_reserve[stream]
        block = self._block[stream]
        if last is not None and now - last < MIN_INTERVAL_S:
            block = min(MAX_BLOCK, block * 2)
        elif last is not None and now - last > RELAX_AFTER_S:
            block = max(MIN_BLOCK, block // 2)
        self._block[stream] = block
        self._last_reserve[stream] = now
        old = mark.reserved
        mark.reserved = max(mark.reserved, need + block)
        self.clean = False
        try:
            self.write()
        except OSError:
            mark.reserved = old
            raise
        return True

    def write(self) -> None:
        """Write the ledger as it is now into the next slot (invariant 5). Raises ``OSError``."""
        doc = _Doc(
            format=_FORMAT,
            version=1,
            generation=self.generation + 1,
            gateway=self.gateway,
            clean=self.clean,
            streams={
                s.wire_name: (m.reserved, m.durable, m.low) for s, m in sorted(self.marks.items())
            },
        )
        data = msgspec.json.encode(msgspec.structs.replace(doc, crc=_crc(doc)))
        fd = self._open()
        os.pwrite(fd, data.ljust(SLOT, b" "), (doc.generation % 2) * SLOT)
        os.fdatasync(fd)
        self.generation = doc.generation
        self.writes += 1

    def _open(self) -> int:
        if self._fd is not None:
            return self._fd
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < 2 * SLOT:
                os.posix_fallocate(fd, 0, 2 * SLOT)
                os.fsync(fd)
                dir_fd = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
