"""Readings of chosen tags as columns, straight from record bodies: no object per point decoded.

A month of one tag at 1 Hz is 2.6 M points; one Python object per point (a decoded struct, its
str, int and float) is what made loading it cost seconds. Here a body holding ``[tag, ts,
value, quality?]`` rows (telemetry body v1, the recorder's ``samples``) is read in one of
three ways, each giving exactly what a full JSON decode gives:

1. **only the wanted tag, no quality, no null** (one tag's records, as a single-tag history
   is stored): the tag strings and row brackets are removed from the bytes and what is left,
   ``ts,value,ts,value,...``, is decoded by msgspec as one list of numbers into numpy;
2. **other tags too**: the wanted tag's rows are cut out of the bytes with one regular
   expression (its JSON string, escaped, as its literal prefix) and only they are converted;
3. anything else (a row the expression does not account for, e.g. a number it does not
   expect): the full decode, then the wanted rows.

A wanted tag's rows are the same in all three (tests/agent/review/test_pointcols.py checks
them against the full decode). Telemetry bodies v2 and statistics are not read here.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Final

import msgspec
import numpy as np
from numpy.typing import NDArray

from drivers import Quality

__all__ = ["ColumnChunks", "TagRows"]

_QUALITY: Final = {q.wire_name: int(q) for q in Quality}
_BAD: Final = int(Quality.BAD_DEVICE)  # a quality name this agent does not know
_numbers: Final = msgspec.json.Decoder(list[float])


class _Row(msgspec.Struct, array_like=True):
    tag: str
    ts: int
    value: float | None
    quality: str | None = None


class _Rows(msgspec.Struct):
    points: list[_Row] = []


_rows: Final = msgspec.json.Decoder(_Rows)


@dataclass(slots=True)
class ColumnChunks:
    """Single-tag column chunks, in the order they were read."""

    names: list[str] = field(default_factory=list)
    ts: list[NDArray[np.int64]] = field(default_factory=list)
    value: list[NDArray[np.float64]] = field(default_factory=list)
    quality: list[NDArray[np.uint8]] = field(default_factory=list)

    def add(
        self, name: str, ts: NDArray[np.int64], value: NDArray[np.float64], q: NDArray[np.uint8]
    ) -> None:
        if ts.shape[0]:
            self.names.append(name)
            self.ts.append(ts)
            self.value.append(value)
            self.quality.append(q)


class TagRows:
    """Reads the rows of ``tags`` out of bodies into a :class:`ColumnChunks`."""

    def __init__(self, tags: Collection[str]) -> None:
        self._tags = []
        for name in sorted(tags):
            quoted = msgspec.json.encode(name)
            row = re.compile(
                rb"\[" + re.escape(quoted) + rb",(-?\d+),(null|-?[0-9][0-9.eE+-]*)"
                rb'(?:,"([a-z_]+)")?\]'
            )
            self._tags.append((name, b"[" + quoted + b",", quoted + b",", row))
        self.chunks = ColumnChunks()
        self.paths = [0, 0, 0]
        """Bodies read by way 1, 2 and 3 (see the module docstring)."""

    def needed(self, raw: bytes) -> bool:
        """Whether ``raw`` can hold a wanted row at all."""
        return any(needle in raw for _, needle, _, _ in self._tags)

    def _only_rows(
        self, raw: bytes, prefix: int, tag: tuple[str, bytes, bytes, object], k: int
    ) -> bool:
        if _only_rows(self.chunks, raw, prefix, tag, k):
            self.paths[0] += 1
            return True
        return False

    def read(self, raw: bytes, prefix: int) -> None:
        """Add the wanted rows of ``raw``, whose rows list starts at byte ``prefix`` (just
        after its ``[``) and runs to the body's ``]}`` end."""
        present = [(t, raw.count(t[1])) for t in self._tags]
        present = [(t, k) for t, k in present if k]
        if not present:
            return
        if len(present) == 1 and self._only_rows(raw, prefix, *present[0]):
            return
        got = [(name, row.findall(raw)) for (name, _, _, row), _ in present]
        if all(len(rows) == k for (_, rows), (_, k) in zip(got, present, strict=True)):
            self.paths[1] += 1
            for name, rows in got:
                self.chunks.add(name, *_columns(rows))
            return
        self.paths[2] += 1
        wanted = {t[0] for t, _ in present}
        decoded = _rows.decode(raw).points
        for name in sorted(wanted):
            mine = [r for r in decoded if r.tag == name]
            self.chunks.add(
                name,
                np.array([r.ts for r in mine], np.int64),
                np.array([r.value for r in mine], np.float64),  # None → NaN
                np.array([_quality(r.quality) for r in mine], np.uint8),
            )


def _only_rows(
    chunks: ColumnChunks, raw: bytes, prefix: int, tag: tuple[str, bytes, bytes, object], k: int
) -> bool:
    """Way 1: the rows are ``k`` rows of this tag without quality or null; added if so."""
    name, _, bare, _ = tag
    start = prefix + 1 + len(bare)
    if not raw.startswith(bare, prefix + 1) or not raw.endswith(b"]]}"):
        return False
    inner = raw[start:-3].replace(b"],[" + bare, b",")
    if b'"' in inner or b"[" in inner or b"]" in inner or b"n" in inner:
        return False  # another tag's row, a quality, a null or another shape
    try:
        flat = np.array(_numbers.decode(b"[" + inner + b"]"), np.float64)
    except msgspec.DecodeError:
        return False
    if flat.shape[0] != 2 * k:
        return False
    exact = flat[0::2]
    ts = exact.astype(np.int64)
    if not (ts == exact).all():  # a ts that is not an exact integer: the full decode says
        return False
    chunks.add(name, ts, flat[1::2].copy(), np.zeros(k, np.uint8))
    return True


def _quality(name: str | bytes | None) -> int:
    if not name:
        return 0
    text = name.decode() if isinstance(name, bytes) else name
    return _QUALITY.get(text, _BAD)


def _columns(
    rows: list[tuple[bytes, bytes, bytes]],
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.uint8]]:
    ts = np.array([int(r[0]) for r in rows], np.int64)
    value = np.array([float("nan") if r[1] == b"null" else float(r[1]) for r in rows], np.float64)
    if any(r[2] for r in rows):
        quality = np.array([_quality(r[2]) for r in rows], np.uint8)
    else:
        quality = np.zeros(len(rows), np.uint8)
    return ts, value, quality
