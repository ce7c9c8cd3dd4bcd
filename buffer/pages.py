"""Rows out of a damaged SQLite file without SQLite: just enough of the file format
(https://www.sqlite.org/fileformat2.html) to read table-leaf cells page by page, from the
database file and from the frames of its WAL.

Invariants:
- Never raises on bad bytes: a page or cell that does not parse is skipped and counted; SQLite
  itself stops at the first bad page, this reader goes on to the next one.
- Everything it returns is unverified: the caller authenticates each record (AEAD) before it
  believes a single value.
- Reads only; a database file is mapped read-only.

A page is *accounted* when it is page 1, a b-tree page with a sane header, an overflow page
reached from a parsed cell, a pointer-map page or a freelist page; ``skipped`` counts the
pages of the file that are none of these (garbage, a truncated tail, pages of a corrupt
region) plus table-leaf pages with a cell that could not be read.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = ["PageFile", "Value", "wal_frames"]

Value = int | float | bytes | str | None
_LEAF_TABLE, _INTERIOR_TABLE, _LEAF_INDEX, _INTERIOR_INDEX = 0x0D, 0x05, 0x0A, 0x02
_WAL_MAGIC = (0x377F0682, 0x377F0683)


@dataclass(frozen=True, slots=True)
class _Frame:
    index: int
    page: int
    commit: bool
    data: bytes


def wal_frames(wal: bytes | None) -> tuple[int, list[_Frame]]:
    """``(page_size, frames)``: the frames of the WAL's current generation (salts equal to the
    header's), up to its last commit frame. Checksums are not verified: see the caller."""
    if wal is None or len(wal) < 32:
        return 0, []
    magic, _, page_size, _, salt1, salt2 = struct.unpack_from(">6I", wal, 0)
    if magic not in _WAL_MAGIC or page_size < 512 or page_size > 65536:
        return 0, []
    out: list[_Frame] = []
    last_commit = -1
    pos, index = 32, 0
    while pos + 24 + page_size <= len(wal):
        page, size_after, s1, s2 = struct.unpack_from(">4I", wal, pos)
        if (s1, s2) != (salt1, salt2) or page == 0:
            break
        out.append(_Frame(index, page, size_after != 0, wal[pos + 24 : pos + 24 + page_size]))
        if size_after:
            last_commit = index
        pos += 24 + page_size
        index += 1
    return page_size, out[: last_commit + 1]


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for i in range(9):
        byte = buf[pos + i]
        if i == 8:
            return (value << 8) | byte, pos + 9
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, pos + i + 1
    raise IndexError  # unreachable


def _record(payload: bytes) -> list[Value]:
    """Decode one record (header of serial types, then values); raises on malformed input."""
    header_len, pos = _varint(payload, 0)
    types = []
    while pos < header_len:
        t, pos = _varint(payload, pos)
        types.append(t)
    if pos != header_len:
        raise ValueError("record header overruns")
    out: list[Value] = []
    pos = header_len
    for t in types:
        if t == 0:
            out.append(None)
        elif 1 <= t <= 6:
            n = (1, 2, 3, 4, 6, 8)[t - 1]
            out.append(int.from_bytes(payload[pos : pos + n], "big", signed=True))
            pos += n
        elif t == 7:
            out.append(struct.unpack_from(">d", payload, pos)[0])
            pos += 8
        elif t in (8, 9):
            out.append(t - 8)
        elif t >= 12:
            n = (t - 12) // 2
            raw = bytes(payload[pos : pos + n])
            out.append(raw if t % 2 == 0 else raw.decode("utf-8", "replace"))
            pos += n
        else:
            raise ValueError(f"reserved serial type {t}")
        if pos > len(payload):
            raise ValueError("record body overruns")
    return out


@dataclass
class PageFile:
    """A database image (``db``: the file's bytes, possibly truncated or garbage) and the
    frames of its WAL. :meth:`rows` yields ``(rowid, values)`` of every table-leaf cell found
    in the database pages and in WAL frames with index >= ``wal_from``."""

    db: bytes
    wal: bytes | None = None
    wal_from: int = 0
    include_db: bool = True
    pages: int = 0
    skipped: int = 0
    _frames: list[_Frame] = field(default_factory=list)
    _latest: dict[int, bytes] = field(default_factory=dict)
    _accounted: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        wal_page_size, self._frames = wal_frames(self.wal)
        size = int.from_bytes(self.db[16:18], "big") if len(self.db) >= 100 else 0
        size = 65536 if size == 1 else size
        if size < 512 or size & (size - 1) or self.db[:16] != b"SQLite format 3\x00":
            size = wal_page_size or 4096
        self.page_size = size
        reserved = self.db[20] if len(self.db) >= 100 and self.db[20] < 64 else 0
        self.usable = size - reserved
        for frame in self._frames:
            if len(frame.data) == size:
                self._latest[frame.page] = frame.data

    def page(self, number: int) -> bytes | None:
        """The newest image of page ``number`` (WAL first, then the file)."""
        if number in self._latest:
            return self._latest[number]
        start = (number - 1) * self.page_size
        if number < 1 or start + self.page_size > len(self.db):
            return None
        return self.db[start : start + self.page_size]

    def rows(self) -> Iterator[tuple[int, list[Value]]]:
        n_db = len(self.db) // self.page_size if self.include_db else 0
        self.pages = n_db + (len(self.db) % self.page_size != 0 and self.include_db)
        self._account_structure(n_db)
        for number in range(1, n_db + 1):
            # Every version is read: the file's here, the WAL's newer ones below.
            yield from self._leaf(
                number, self.db[(number - 1) * self.page_size : number * self.page_size]
            )
        for frame in self._frames:
            if frame.index >= self.wal_from:
                self.pages += 1
                yield from self._leaf(frame.page, frame.data, from_wal=True)
        self.skipped += sum(1 for p in range(1, n_db + 1) if p not in self._accounted)
        self.skipped += len(self.db) % self.page_size != 0 and self.include_db

    def _account_structure(self, n_db: int) -> None:
        self._accounted.add(1)
        j = self.usable // 5 + 1
        p = 2
        while p <= n_db:  # pointer-map pages (auto_vacuum databases)
            self._accounted.add(p)
            p += j
        if len(self.db) >= 40:
            trunk = int.from_bytes(self.db[32:36], "big")
            seen = 0
            while 1 < trunk <= n_db and trunk not in self._accounted and seen < n_db:
                self._accounted.add(trunk)
                image = self.page(trunk) or b""
                count = int.from_bytes(image[4:8], "big")
                for i in range(min(count, (self.usable - 8) // 4)):
                    self._accounted.add(int.from_bytes(image[8 + 4 * i : 12 + 4 * i], "big"))
                trunk = int.from_bytes(image[0:4], "big")
                seen += 1

    def _leaf(
        self, number: int, image: bytes, from_wal: bool = False
    ) -> Iterator[tuple[int, list[Value]]]:
        hdr = 100 if number == 1 else 0
        if len(image) < hdr + 8:
            return
        kind = image[hdr]
        ncells = int.from_bytes(image[hdr + 3 : hdr + 5], "big")
        if kind not in (_LEAF_TABLE, _INTERIOR_TABLE, _LEAF_INDEX, _INTERIOR_INDEX):
            return
        if ncells * 2 + hdr + 12 > len(image):
            return
        if not from_wal:
            self._accounted.add(number)
        if kind != _LEAF_TABLE:
            return
        bad = False
        for i in range(ncells):
            try:
                ptr = int.from_bytes(image[hdr + 8 + 2 * i : hdr + 10 + 2 * i], "big")
                yield self._cell(image, ptr, from_wal)
            except (IndexError, ValueError, struct.error):
                bad = True
        self.skipped += bad

    def _cell(self, image: bytes, ptr: int, from_wal: bool) -> tuple[int, list[Value]]:
        if ptr >= len(image):
            raise ValueError("cell pointer outside the page")
        size, pos = _varint(image, ptr)
        rowid, pos = _varint(image, pos)
        u = self.usable
        x = u - 35
        if size <= x:
            local = size
        else:
            m = ((u - 12) * 32 // 255) - 23
            k = m + (size - m) % (u - 4)
            local = k if k <= x else m
        if pos + local > len(image):
            raise ValueError("cell overruns the page")
        payload = bytearray(image[pos : pos + local])
        if local < size:
            nxt = int.from_bytes(image[pos + local : pos + local + 4], "big")
            seen: set[int] = set()
            while len(payload) < size:
                over = self.page(nxt) if nxt not in seen else None
                if over is None:
                    raise ValueError("overflow chain broken")
                seen.add(nxt)
                if not from_wal:
                    self._accounted.add(nxt)
                payload += over[4 : min(u, 4 + size - len(payload))]
                nxt = int.from_bytes(over[0:4], "big")
        return rowid, _record(bytes(payload))
