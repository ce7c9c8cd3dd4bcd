"""Telemetry body v2 and statistics records (design/UPLINK.md "Telemetry body v2").

Shapes (envelope ``"v": 2``, stream ``telemetry``)::

    groups  {"t0": ms, "at": [[dt_ms, {tag: value, ...}, {tag: quality, ...}?], ...]}
    stats   {"t0": ms, "window_ms": w, "stats": [[tag, dt_ms, count, min, max, mean, last, bad]]}

A group's ts is ``t0 + dt_ms`` (``t0`` is the earliest group's ts, so ``dt_ms >= 0``); a tag
appears at most once per group; ``values`` holds ``null`` for a point that is not good and the
optional third object maps exactly those tags to their quality code. The pure functions here
(:func:`telemetry_body_v2`, the decoders) are the reference; the runtime encodes from columns
(:mod:`agent.telemetry_v2`) and its bytes equal :func:`telemetry_body_v2` of the same points
(tests/agent/test_telemetry_v2.py).

:func:`body_version` tells a stored telemetry body's version from its first key, so records
written before a switch of ``uplink.telemetry_body`` are still sent under the right ``v``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final, NamedTuple

import msgspec

from agent.codec import BytesLike, CodecError, Point

__all__ = [
    "STAT_FIELDS",
    "VERSION_PEEK_BYTES",
    "StatRow",
    "body_version",
    "decode_stats",
    "decode_telemetry_any",
    "decode_telemetry_v2",
    "stats_body",
    "telemetry_body_v2",
]

_encoder: Final = msgspec.json.Encoder()
_V1_START: Final = b'{"points"'
VERSION_PEEK_BYTES: Final = len(_V1_START)
STAT_FIELDS: Final = ("tag", "dt_ms", "count", "min", "max", "mean", "last", "bad")


class StatRow(NamedTuple):
    """One statistics row: a tag over the window starting at ``start_ms`` (absolute)."""

    tag: str
    start_ms: int
    samples: int  # ``count`` on the wire: every sample polled in the window, good or not
    min: float | None  # min/max/mean/last: over the good samples; None when there were none
    max: float | None
    mean: float | None
    last: float | None
    bad: int  # samples that were not good


def body_version(stream: str, body: bytes) -> int:
    """The envelope version a stored body needs: 2 for a telemetry body that is not v1.
    Reads only the body's first :data:`VERSION_PEEK_BYTES` (a prefix is enough)."""
    return 2 if stream == "telemetry" and not body.startswith(_V1_START) else 1


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


def telemetry_body_v2(points: Sequence[tuple[str, int, float | None, str | None]]) -> bytes:
    """The v2 body of ``points`` in order (reference encoder; tools and tests).

    Consecutive points with the same ts form one group; a tag already in the current group
    starts a new group with the same ts. Raises ValueError for no points.
    """
    if not points:
        raise ValueError("a telemetry body needs at least one point")
    t0 = min(p[1] for p in points)
    groups: list[list[object]] = []
    cur_ts: int | None = None
    values: dict[str, float | None] = {}
    quals: dict[str, str] = {}
    for tag, ts, value, quality in points:
        if ts != cur_ts or tag in values:
            if cur_ts is not None:
                groups.append([cur_ts - t0, values, quals] if quals else [cur_ts - t0, values])
            cur_ts, values, quals = ts, {}, {}
        good = quality is None or quality == "good"
        values[tag] = _finite(value) if good else None
        if not good:
            quals[tag] = str(quality)
    assert cur_ts is not None
    groups.append([cur_ts - t0, values, quals] if quals else [cur_ts - t0, values])
    return _encoder.encode({"t0": t0, "at": groups})


def stats_body(window_ms: int, rows: Sequence[StatRow]) -> bytes:
    """``{"t0", "window_ms", "stats": [...]}`` of ``rows`` (t0 = the earliest window start)."""
    if not rows:
        raise ValueError("a statistics body needs at least one row")
    t0 = min(r.start_ms for r in rows)
    out = [
        [r.tag, r.start_ms - t0, r.samples]
        + [_finite(x) for x in (r.min, r.max, r.mean, r.last)]
        + [r.bad]
        for r in rows
    ]
    return _encoder.encode({"t0": t0, "window_ms": window_ms, "stats": out})


_doc_decoder: Final = msgspec.json.Decoder(dict[str, Any])


def _doc(body: BytesLike) -> dict[str, Any]:
    try:
        return _doc_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise CodecError(f"malformed telemetry body: {exc}") from exc


def _int(x: object) -> bool:
    return type(x) is int


def _num(x: object) -> bool:
    return x is None or type(x) in (int, float)


def decode_telemetry_v2(body: BytesLike) -> list[Point]:
    """The points of a v2 group body, in order; raises :class:`CodecError`."""
    doc = _doc(body)
    if set(doc) != {"t0", "at"} or not _int(doc["t0"]) or not isinstance(doc["at"], list):
        raise CodecError(f"telemetry v2 body must be {{t0, at}}, got keys {sorted(doc)}")
    t0: int = doc["t0"]
    points: list[Point] = []
    for i, group in enumerate(doc["at"]):
        ok = isinstance(group, list) and len(group) in (2, 3) and _int(group[0])
        ok = ok and group[0] >= 0 and isinstance(group[1], dict)
        ok = ok and (len(group) == 2 or isinstance(group[2], dict))
        if not ok:
            raise CodecError(f"telemetry group {i} is not [dt_ms, values, qualities?]")
        quals: dict[str, Any] = group[2] if len(group) == 3 else {}
        for tag, q in quals.items():
            if tag not in group[1] or not isinstance(q, str) or group[1][tag] is not None:
                raise CodecError(f"telemetry group {i}: quality of {tag!r} needs a null value")
        for tag, value in group[1].items():
            if not _num(value):
                raise CodecError(f"telemetry group {i}: value of {tag!r} is not a number")
            # A good point written null (a non-finite value) decodes as v1's does: no quality.
            points.append(Point(tag, t0 + group[0], value, quals.get(tag)))
    return points


def decode_stats(body: BytesLike) -> tuple[int, list[StatRow]]:
    """``(window_ms, rows)`` of a statistics body; raises :class:`CodecError`."""
    doc = _doc(body)
    if set(doc) != {"t0", "window_ms", "stats"} or not _int(doc["t0"]):
        raise CodecError(f"statistics body must be {{t0, window_ms, stats}}, got {sorted(doc)}")
    window = doc["window_ms"]
    if not _int(window) or window < 1 or not isinstance(doc["stats"], list):
        raise CodecError("statistics body: window_ms must be a positive integer")
    rows: list[StatRow] = []
    for i, r in enumerate(doc["stats"]):
        ok = isinstance(r, list) and len(r) == 8 and isinstance(r[0], str)
        ok = ok and _int(r[1]) and _int(r[2]) and _int(r[7]) and all(map(_num, r[3:7]))
        if not ok:
            raise CodecError(f"statistics row {i} is not {list(STAT_FIELDS)}: {r!r}")
        rows.append(StatRow(r[0], doc["t0"] + r[1], r[2], r[3], r[4], r[5], r[6], r[7]))
    return window, rows


def decode_telemetry_any(v: int, body: BytesLike) -> list[Point] | tuple[int, list[StatRow]]:
    """Dispatch on the envelope version and the body's keys: v1 points, v2 groups or stats."""
    from agent.codec import decode_telemetry

    if v == 1:
        return decode_telemetry(body)
    if "stats" in _doc(body):
        return decode_stats(body)
    return decode_telemetry_v2(body)
