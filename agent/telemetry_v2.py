"""Telemetry body v2 from a poll's columns: per-point byte pieces, grouped into records.

:class:`GroupEncoder` turns columns into two byte pieces per point — ``"tag":value`` and, for a
point that is not good, ``"tag":"quality"`` — with whole columns going through msgspec in one
call and precomputed per-tag keys gathered with numpy indexing (no Python tuple per point).
:class:`GroupBatcher` accumulates pieces into records of at most ``max_points`` points and about
``max_bytes`` body bytes (an upper bound is counted: each new ts costs a group's framing) and
writes each record as the v2 body. Invariant: a record's bytes equal
:func:`agent.codec_v2.telemetry_body_v2` of its points in order (tests/agent/test_telemetry_v2.py).

Exact 64-bit integers: :meth:`GroupEncoder.pieces` takes ``exact``, a position → integer
map (``SampleBatch.exact``, filled by the drivers for GOOD int64/uint64 samples); those
integers are written instead of the float value.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Final

import msgspec
import numpy as np
from numpy.typing import NDArray

__all__ = ["GroupBatcher", "GroupEncoder", "Pieces"]

_encoder: Final = msgspec.json.Encoder()
_GROUP_COST: Final = 24  # upper bound of "[dt_ms,{" "}" ",{" "}" "]," beyond the pieces
_HEAD_COST: Final = 40  # '{"t0":<13 digits>,"at":[' ... ']}'

Pieces = tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.object_], NDArray[np.object_]]
"""``(ts_ms, tag, value_piece, quality_piece)``; a good point's quality piece is ``b""``."""


class GroupEncoder:
    """Per-point v2 pieces from columns (see the module docstring)."""

    def __init__(self, names: Sequence[str], qualities: Mapping[int, str]) -> None:
        self._key: NDArray[np.object_] = np.empty(len(names), dtype=object)
        for i, name in enumerate(names):
            self._key[i] = _encoder.encode(name) + b":"
        self._qual: NDArray[np.object_] = np.empty(256, dtype=object)
        self._qual[:] = None
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
        empty = np.empty(0, dtype=object)
        if n == 0:
            return ts_ms[:0], tag[:0], empty, empty
        if int(tag.min()) < 0 or int(tag.max()) >= len(self._key):
            raise ValueError(f"telemetry: tag index outside 0..{len(self._key) - 1}")
        qtext = self._qual[quality]
        if any(q is None for q in qtext[quality != 0]):
            bad = sorted({int(q) for q, t in zip(quality, qtext, strict=True) if t is None})
            raise ValueError(f"telemetry: unknown quality code(s) {bad}")
        good = quality == 0
        # msgspec writes NaN and ±inf as null; a point that is not good carries null.
        vals = np.where(good, value, np.nan).tolist()
        parts = np.array(_encoder.encode(vals)[1:-1].split(b","), dtype=object)
        for k, integer in (exact or {}).items():  # a few 64-bit registers, not every sample
            if good[k]:
                parts[k] = _encoder.encode(integer)
        keys = self._key[tag]
        vpiece: NDArray[np.object_] = keys + parts
        qpiece: NDArray[np.object_] = np.empty(n, dtype=object)
        qpiece[:] = b""
        bad_i = np.flatnonzero(~good)
        if len(bad_i):
            qpiece[bad_i] = keys[bad_i] + qtext[bad_i]
        return ts_ms, tag, vpiece, qpiece


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
        ts, tag, vp, qp = p
        out: list[bytes] = []
        n = len(ts)
        if n:
            qlen = np.fromiter(map(len, qp), dtype=np.int64, count=n)
            cost = np.fromiter(map(len, vp), dtype=np.int64, count=n) + 1 + qlen + (qlen > 0)
            # Group framing is counted where a group may start: at every new ts, at a poll's
            # first point, and everywhere when a tag repeats at one ts (a push device; rare).
            starts = np.empty(n, dtype=bool)
            starts[0] = True
            np.not_equal(ts[1:], ts[:-1], out=starts[1:])
            if not _distinct(tag) and _repeats(ts, tag):
                starts[:] = True
            cost += np.where(starts, _GROUP_COST, 0)
            csum = np.cumsum(cost)
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
                self._held.append((ts[i:j], tag[i:j], vp[i:j], qp[i:j]))
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
        held = self._held
        if len(held) == 1:  # the usual case (one poll per record): nothing to join
            ts, tag, vp, qp = held[0]
        else:
            ts = np.concatenate([h[0] for h in held])
            tag = np.concatenate([h[1] for h in held])
            vp = np.concatenate([h[2] for h in held])
            qp = np.concatenate([h[3] for h in held])
        self._held, self._n, self._bytes, self._since = [], 0, _HEAD_COST, None
        return _body(ts, tag, vp, qp)


def _distinct(tag: NDArray[np.int32]) -> bool:
    """Whether no tag occurs twice; a poll's tags ascend, which is checked first (cheaply)."""
    if len(tag) < 2 or bool((tag[1:] > tag[:-1]).all()):
        return True
    return len(np.unique(tag)) == len(tag)


def _repeats(ts: NDArray[np.int64], tag: NDArray[np.int32]) -> bool:
    """Whether some tag occurs twice at one ts."""
    pairs = np.stack([ts, tag.astype(np.int64)], axis=1)
    return len(np.unique(pairs, axis=0)) < len(ts)


def _body(
    ts: NDArray[np.int64],
    tag: NDArray[np.int32],
    vp: NDArray[np.object_],
    qp: NDArray[np.object_],
) -> bytes:
    t0 = int(ts.min())
    cuts = [0, *(np.flatnonzero(ts[1:] != ts[:-1]) + 1).tolist(), len(ts)]
    groups: list[bytes] = []
    for s, e in itertools.pairwise(cuts):
        seg = tag[s:e]
        if _distinct(seg):
            groups.append(_group(int(ts[s]) - t0, vp[s:e], qp[s:e]))
            continue
        # A tag twice at one ts (a push device): split where a tag repeats (rare path).
        seen: set[int] = set()
        cut = s
        for k, t in enumerate(seg.tolist(), start=s):
            if t in seen:
                groups.append(_group(int(ts[s]) - t0, vp[cut:k], qp[cut:k]))
                seen, cut = set(), k
            seen.add(t)
        groups.append(_group(int(ts[s]) - t0, vp[cut:e], qp[cut:e]))
    return b'{"t0":' + str(t0).encode() + b',"at":[' + b",".join(groups) + b"]}"


def _group(dt: int, vp: NDArray[np.object_], qp: NDArray[np.object_]) -> bytes:
    head = b"[" + str(dt).encode() + b",{" + b",".join(vp.tolist()) + b"}"
    bad = list(filter(None, qp.tolist()))
    return head + (b",{" + b",".join(bad) + b"}]" if bad else b"]")
