"""Telemetry body v2 from a poll's columns: one encoded run of ``"tag":value,`` per poll,
grouped into records.

:class:`GroupEncoder` turns a poll's columns into :class:`Pieces`: every value goes through
msgspec in one call (a JSON list), and the values' bytes are interleaved with precomputed
per-tag keys by one numpy gather, so a poll is one ``bytes`` of ``"tag":value,`` runs with
the offset of each point (no Python object per point). A point that is not good carries
``null`` and, beside it, a ``"tag":"quality"`` piece (those are few, and kept per point).
:class:`GroupBatcher` accumulates pieces into records of at most ``max_points`` points and about
``max_bytes`` body bytes (an upper bound is counted: each new ts costs a group's framing) and
writes each record as the v2 body, cutting groups out of the runs. Invariant: a record's bytes
equal :func:`agent.codec_v2.telemetry_body_v2` of its points in order
(tests/agent/test_telemetry_v2.py).

Exact 64-bit integers: :meth:`GroupEncoder.pieces` takes ``exact``, a position → integer
map (``SampleBatch.exact``, filled by the drivers for GOOD int64/uint64 samples); those
integers are written instead of the float value.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import msgspec
import numpy as np
from numpy.typing import NDArray

__all__ = ["GroupBatcher", "GroupEncoder", "Pieces"]

_encoder: Final = msgspec.json.Encoder()
_GROUP_COST: Final = 24  # upper bound of "[dt_ms,{" "}" ",{" "}" "]," beyond the pieces
_HEAD_COST: Final = 40  # '{"t0":<13 digits>,"at":[' ... ']}'
_COMMA: Final = ord(",")


@dataclass(frozen=True, slots=True, eq=False)
class Pieces:
    """One poll's points, encoded. Point ``i`` is ``run[off[i]:off[i + 1]]``, that is
    ``"tag":value,`` (its trailing comma included); ``bad`` maps the position of every point
    that is not good to its ``"tag":"quality"`` piece; ``cost`` is each point's share of a
    body's bytes, group framing not counted."""

    ts: NDArray[np.int64]
    tag: NDArray[np.int32]
    run: bytes
    off: NDArray[np.int64]
    bad: dict[int, bytes]
    cost: NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.ts)

    def cut(self, i: int, j: int) -> Pieces:
        """Points ``i..j-1`` (a view of the run, re-based offsets)."""
        if i == 0 and j == len(self.ts):
            return self
        a, b = int(self.off[i]), int(self.off[j])
        bad = {k - i: p for k, p in self.bad.items() if i <= k < j}
        return Pieces(
            self.ts[i:j], self.tag[i:j], self.run[a:b], self.off[i : j + 1] - a, bad,
            self.cost[i:j],
        )  # fmt: skip


def _empty_pieces() -> Pieces:
    z = np.zeros(0, dtype=np.int64)
    return Pieces(z, np.zeros(0, dtype=np.int32), b"", np.zeros(1, dtype=np.int64), {}, z)


def _join(parts: Sequence[Pieces]) -> Pieces:
    """Several polls' pieces as one, in order."""
    if len(parts) == 1:
        return parts[0]
    bad: dict[int, bytes] = {}
    base = 0
    offs = [np.zeros(1, dtype=np.int64)]
    shift = 0
    for p in parts:
        bad.update({k + base: q for k, q in p.bad.items()})
        offs.append(p.off[1:] + shift)
        base += len(p)
        shift += len(p.run)
    return Pieces(
        np.concatenate([p.ts for p in parts]), np.concatenate([p.tag for p in parts]),
        b"".join(p.run for p in parts), np.concatenate(offs), bad,
        np.concatenate([p.cost for p in parts]),
    )  # fmt: skip


class GroupEncoder:
    """Per-poll v2 pieces from columns (see the module docstring)."""

    def __init__(self, names: Sequence[str], qualities: Mapping[int, str]) -> None:
        keys = [_encoder.encode(name) + b":" for name in names]
        self._names = len(keys)
        self._keys = keys
        self._key_bytes = np.frombuffer(b"".join(keys), dtype=np.uint8)
        self._key_len = np.array([len(k) for k in keys], dtype=np.int64)
        self._key_start = np.cumsum(self._key_len) - self._key_len
        self._qual: list[bytes | None] = [None] * 256
        self._qual[0] = b""
        for code, wire in qualities.items():
            if not 0 < code < 256:
                raise ValueError(f"quality code {code} is outside 1..255")
            self._qual[code] = _encoder.encode(wire)

    def pieces(
        self,
        tag: NDArray[np.int32],
        ts_ms: NDArray[np.int64],
        value: NDArray[np.float64],
        quality: NDArray[np.uint8],
        exact: Mapping[int, int] | None = None,
    ) -> Pieces:
        """The pieces of every sample, in order; raises ValueError for an unknown quality
        code or a tag index outside the table."""
        n = len(tag)
        if n == 0:
            return _empty_pieces()
        if int(tag.min()) < 0 or int(tag.max()) >= self._names:
            raise ValueError(f"telemetry: tag index outside 0..{self._names - 1}")
        good = quality == 0
        bad_at = np.flatnonzero(~good).tolist()
        bad: dict[int, bytes] = {}
        if bad_at:
            codes = quality[bad_at].tolist()
            unknown = sorted({c for c in codes if self._qual[c] is None})
            if unknown:
                raise ValueError(f"telemetry: unknown quality code(s) {unknown}")
            for k, c, t in zip(bad_at, codes, tag[bad_at].tolist(), strict=True):
                bad[k] = self._keys[t] + self._qual[c]
        # msgspec writes NaN and ±inf as null; a point that is not good carries null.
        vals = np.where(good, value, np.nan).tolist() if bad_at else value.tolist()
        for k, integer in (exact or {}).items():  # a few 64-bit registers, not every sample
            if good[k]:
                vals[k] = integer
        listed = np.frombuffer(_encoder.encode(vals), dtype=np.uint8).copy()
        listed[-1] = _COMMA  # "[v0,v1,...,vn]": value i with its comma is after the i-th mark
        marks = np.flatnonzero(listed == _COMMA)  # numbers and null hold no comma
        vstart = np.empty(n, dtype=np.int64)
        vstart[0] = 1
        vstart[1:] = marks[:-1] + 1
        vlen = marks + 1 - vstart
        klen = self._key_len[tag]
        # one gather from keys ++ values: segments key_0, value_0, key_1, value_1, ...
        seg_from = np.empty(2 * n, dtype=np.int64)
        seg_from[0::2] = self._key_start[tag]
        seg_from[1::2] = vstart + len(self._key_bytes)
        seg_len = np.empty(2 * n, dtype=np.int64)
        seg_len[0::2] = klen
        seg_len[1::2] = vlen
        ends = np.cumsum(seg_len)
        # the source index of every output byte: +1 within a segment, a jump at its start
        step = np.ones(int(ends[-1]), dtype=np.int64)
        step[0] = seg_from[0]
        step[ends[:-1]] = seg_from[1:] - (seg_from[:-1] + seg_len[:-1] - 1)
        run = np.concatenate((self._key_bytes, listed))[np.cumsum(step)].tobytes()
        off = np.zeros(n + 1, dtype=np.int64)
        off[1:] = ends[1::2]
        cost = klen + vlen
        if bad:
            at = np.fromiter(bad, dtype=np.int64, count=len(bad))
            cost[at] += np.fromiter(map(len, bad.values()), dtype=np.int64, count=len(bad)) + 1
        return Pieces(ts_ms, tag, run, off, bad, cost)


class GroupBatcher:
    """Pieces → v2 bodies; the same contract as :class:`agent.telemetry.TelemetryBatcher`
    (never an empty record, a point never split or dropped, ``linger_ms`` 0 closes at the end
    of every add)."""

    def __init__(self, *, max_points: int, max_bytes: int, linger_ms: int) -> None:
        if max_points < 1 or max_bytes < 64 or linger_ms < 0:
            raise ValueError("max_points >= 1, max_bytes >= 64 and linger_ms >= 0 required")
        self.max_points = max_points
        self.max_bytes = max_bytes
        self.linger_ms = linger_ms
        self._held: list[Pieces] = []
        self._n = 0
        self._bytes = _HEAD_COST
        self._since: int | None = None

    @property
    def pending(self) -> int:
        return self._n

    def add(self, p: Pieces, now_ms: int) -> list[bytes]:
        """Add one poll's pieces; return the bodies that are complete (possibly none)."""
        ts, tag = p.ts, p.tag
        out: list[bytes] = []
        n = len(ts)
        if n:
            # Group framing is counted where a group may start: at every new ts, at a poll's
            # first point, and everywhere when a tag repeats at one ts (a push device; rare).
            starts = np.empty(n, dtype=bool)
            starts[0] = True
            np.not_equal(ts[1:], ts[:-1], out=starts[1:])
            if not _distinct(tag) and _repeats(ts, tag):
                starts[:] = True
            csum = np.cumsum(p.cost + np.where(starts, _GROUP_COST, 0))
            i = 0
            while i < n:
                base = int(csum[i - 1]) if i else 0
                # A record's first point always opens a group: add the framing if not counted.
                extra = 0 if self._n or starts[i] else _GROUP_COST
                room = base + self.max_bytes - self._bytes - extra
                fit = int(np.searchsorted(csum, room, "right"))
                j = max(i, min(fit, i + self.max_points - self._n))
                if j == i:
                    if self._n:
                        out.append(self._close())
                        continue
                    j = i + 1
                if not self._n:
                    self._since = now_ms
                self._held.append(p.cut(i, j))
                self._n += j - i
                self._bytes += int(csum[j - 1]) - base + extra
                i = j
                if i < n:
                    out.append(self._close())
        if self.linger_ms == 0 and self._n:
            out.append(self._close())
        return out

    def due(self, now_ms: int) -> list[bytes]:
        if self._n and self._since is not None and now_ms - self._since >= self.linger_ms:
            return [self._close()]
        return []

    def flush(self) -> list[bytes]:
        return [self._close()] if self._n else []

    def _close(self) -> bytes:
        p = _join(self._held)
        self._held, self._n, self._bytes, self._since = [], 0, _HEAD_COST, None
        return _body(p)


def _distinct(tag: NDArray[np.int32]) -> bool:
    """Whether no tag occurs twice; a poll's tags ascend, which is checked first (cheaply)."""
    if len(tag) < 2 or bool((tag[1:] > tag[:-1]).all()):
        return True
    return len(np.unique(tag)) == len(tag)


def _repeats(ts: NDArray[np.int64], tag: NDArray[np.int32]) -> bool:
    """Whether some tag occurs twice at one ts."""
    pairs = np.stack([ts, tag.astype(np.int64)], axis=1)
    return len(np.unique(pairs, axis=0)) < len(ts)


def _body(p: Pieces) -> bytes:
    ts, tag = p.ts, p.tag
    t0 = int(ts.min())
    cuts = [0, *(np.flatnonzero(ts[1:] != ts[:-1]) + 1).tolist(), len(ts)]
    groups: list[bytes] = []
    for s, e in itertools.pairwise(cuts):
        dt = int(ts[s]) - t0
        seg = tag[s:e]
        if _distinct(seg):
            groups.append(_group(dt, p, s, e))
            continue
        # A tag twice at one ts (a push device): split where a tag repeats (rare path).
        seen: set[int] = set()
        cut = s
        for k, t in enumerate(seg.tolist(), start=s):
            if t in seen:
                groups.append(_group(dt, p, cut, k))
                seen, cut = set(), k
            seen.add(t)
        groups.append(_group(dt, p, cut, e))
    return b'{"t0":' + str(t0).encode() + b',"at":[' + b",".join(groups) + b"]}"


def _group(dt: int, p: Pieces, s: int, e: int) -> bytes:
    """Group ``[dt,{values},{qualities}?]`` of points ``s..e-1`` (the run's trailing comma cut)."""
    values = p.run[int(p.off[s]) : int(p.off[e]) - 1]
    head = b"[" + str(dt).encode() + b",{" + values + b"}"
    bad = [q for k, q in sorted(p.bad.items()) if s <= k < e] if p.bad else []
    return head + (b",{" + b",".join(bad) + b"}]" if bad else b"]")
