"""The review's only door to the buffer: read-only columns of alarms, points, events, incidents.

Everything here goes through :class:`buffer.StoreReader` (read-only, no lock, one snapshot per
call, safe beside the running agent) and the record bodies of agent/codec.py (design/UPLINK.md)
and agent/review/recorder.py. No other review module imports :mod:`buffer`.

Invariants:
- Alarm rows come in stored order (alarm seq = the order the engine emitted them), which is
  timestamp order per tag; :class:`AlarmLog` keeps that order.
- Telemetry records hold points taken before the record was created, so a time window on the
  points reads the records created from a minute before the window on; points outside the
  window are dropped.
- A record that fails authentication is skipped and counted in ``unreadable`` (``safeedge
  buffer verify`` names it); nothing is guessed.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import msgspec
import numpy as np
from numpy.typing import NDArray

from agent.codec_v2 import decode_telemetry_v2
from agent.config import AgentConfig, resolved_paths
from agent.review.pointcols import ColumnChunks, TagRows
from buffer import BufferNeedsHumanError, StoreReader, Stream
from buffer import StoreError as _BufferError
from drivers import Quality

__all__ = [
    "EVENTS",
    "KINDS",
    "QUALITY_NAMES",
    "AlarmLog",
    "History",
    "HistoryError",
    "Point",
    "PointLog",
    "alarm_log",
    "point_log",
]

KINDS: Final = ("fault", "high", "low", "roc", "trend_high", "trend_low", "stuck")
EVENTS: Final = ("raise", "escalate", "deescalate", "clear", "return", "ack")
QUALITY_NAMES: Final = tuple(q.wire_name for q in Quality)
_KIND: Final = {k: i for i, k in enumerate(KINDS)}
_EVENT: Final = {e: i for i, e in enumerate(EVENTS)}
_QUALITY: Final = {q.wire_name: int(q) for q in Quality}
_BAD: Final = int(Quality.BAD_DEVICE)  # a quality name this agent does not know
_BEFORE_MS: Final = 60_000  # telemetry records are created after their points were taken
_AFTER_MS: Final = 300_000
_V1_ROWS: Final = b'{"points":['
_SAMPLES: Final = b'{"type":"samples",'
_SAMPLES_ROWS: Final = b',"points":['
_NOT_SAMPLES: Final = tuple(b'{"type":"%s"' % t for t in (b"open", b"alarms", b"close"))


class _AlarmBody(msgspec.Struct):
    """The fields of an alarm body (agent/codec.py ``alarm_body``) the review uses."""

    ts_ms: int
    tag: str
    alarm: str
    event: str
    level: int
    value: float | None
    alarm_id: str
    user: str | None = None
    eta_s: float | None = None
    limit: float | None = None


class Point(msgspec.Struct, array_like=True, frozen=True):
    """A telemetry point as the codec writes it: ``[tag, ts, value, quality?]``."""

    tag: str
    ts: int
    value: float | None
    quality: str | None = None


class _TelemetryBody(msgspec.Struct):
    points: list[Point]


class _IncidentSamples(msgspec.Struct):
    type: str
    points: list[Point] = []


def _telemetry_points(raw: bytes) -> list[Point]:
    """The readings of a telemetry record: body v1 points, body v2 groups (agent/codec_v2.py);
    a statistics record holds no readings (its rows summarise a window) and gives none."""
    if raw.startswith(b'{"points"'):
        return _telemetry_decoder.decode(raw).points
    if raw.startswith(b'{"t0"') and b',"window_ms":' in raw[:48]:
        return []
    return [Point(p.tag, p.ts, p.value, p.quality) for p in decode_telemetry_v2(raw)]


_alarm_decoder: Final = msgspec.json.Decoder(_AlarmBody)
_telemetry_decoder: Final = msgspec.json.Decoder(_TelemetryBody)
_samples_decoder: Final = msgspec.json.Decoder(_IncidentSamples)
_any_decoder: Final = msgspec.json.Decoder(dict[str, Any])


@dataclass(frozen=True, slots=True)
class AlarmLog:
    """Alarm events as columns, in stored order. ``tag`` indexes ``tags``, ``kind`` indexes
    :data:`KINDS`, ``event`` :data:`EVENTS`, ``occ`` indexes ``occ_ids`` (one alarm_id per
    occurrence); ``value``, ``eta_s`` and ``limit`` are NaN when absent; ``users`` maps a row
    of an ``ack`` to who acknowledged."""

    ts_ms: NDArray[np.int64]
    tag: NDArray[np.int32]
    kind: NDArray[np.int8]
    event: NDArray[np.int8]
    level: NDArray[np.int8]
    occ: NDArray[np.int32]
    value: NDArray[np.float64]
    eta_s: NDArray[np.float64]
    limit: NDArray[np.float64]
    tags: tuple[str, ...]
    occ_ids: tuple[str, ...]
    users: dict[int, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.ts_ms.shape[0])


def _nan(x: float | None) -> float:
    return math.nan if x is None else float(x)


def alarm_log(bodies: Collection[bytes]) -> AlarmLog:
    """Columns from alarm record bodies (raises ``msgspec.DecodeError`` on a malformed one)."""
    n = len(bodies)
    ts = np.empty(n, np.int64)
    tag = np.empty(n, np.int32)
    kind = np.empty(n, np.int8)
    event = np.empty(n, np.int8)
    level = np.empty(n, np.int8)
    occ = np.empty(n, np.int32)
    value = np.empty(n, np.float64)
    eta = np.empty(n, np.float64)
    limit = np.empty(n, np.float64)
    tags: dict[str, int] = {}
    occs: dict[str, int] = {}
    users: dict[int, str] = {}
    decode = _alarm_decoder.decode
    for i, raw in enumerate(bodies):  # one Python step per event is the floor: decode cost
        b = decode(raw)
        ts[i] = b.ts_ms
        tag[i] = tags.setdefault(b.tag, len(tags))
        kind[i] = _KIND[b.alarm]
        event[i] = _EVENT[b.event]
        level[i] = b.level
        occ[i] = occs.setdefault(b.alarm_id, len(occs))
        value[i] = _nan(b.value)
        eta[i] = _nan(b.eta_s)
        limit[i] = _nan(b.limit)
        if b.user is not None:
            users[i] = b.user
    return AlarmLog(
        ts, tag, kind, event, level, occ, value, eta, limit, tuple(tags), tuple(occs), users
    )


@dataclass(frozen=True, slots=True)
class PointLog:
    """Readings as columns sorted by (tag, ts); ``tag`` indexes ``tags``; ``value`` NaN when
    not good; ``quality`` as :class:`drivers.Quality` codes."""

    ts_ms: NDArray[np.int64]
    tag: NDArray[np.int32]
    value: NDArray[np.float64]
    quality: NDArray[np.uint8]
    tags: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.ts_ms.shape[0])

    def of(self, name: str) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.uint8]]:
        """(ts, value, quality) of one tag (empty when it has no readings)."""
        if name not in self.tags:
            return np.empty(0, np.int64), np.empty(0, np.float64), np.empty(0, np.uint8)
        sel = self.tag == self.tags.index(name)
        return self.ts_ms[sel], self.value[sel], self.quality[sel]


def point_log(
    points: Sequence[Point],
    *,
    dedup: bool,
    tags: Collection[str] | None = None,
    from_ms: int | None = None,
    to_ms: int | None = None,
    chunks: ColumnChunks | None = None,
) -> PointLog:
    """Columns from points, then ``chunks`` (already columns, agent/review/pointcols.py),
    sorted by (tag, ts), keeping only ``tags`` (all without) with ``from_ms <= ts < to_ms``;
    with ``dedup`` a second reading of one tag at one ts is dropped (the same sample seen
    twice; the first in that order is kept). Selection is done on the columns: a Python step
    per point is what costs here (millions of points for a month of one tag at 1 Hz)."""
    seen = sorted({p.tag for p in points} | set(chunks.names if chunks else ()))
    n = len(points)
    index = {name: i for i, name in enumerate(seen)}
    # list comprehensions then one conversion each: ~2x faster than np.fromiter on generators
    if len(seen) == 1:
        tag = np.zeros(n, np.int32)
    else:
        tag = np.array([index[p.tag] for p in points], np.int32)
    ts = np.array([p.ts for p in points], np.int64)
    keep = np.ones(n, bool)
    if tags is not None:
        keep &= np.isin(tag, [i for i, name in enumerate(seen) if name in set(tags)])
    if from_ms is not None:
        keep &= ts >= from_ms
    if to_ms is not None:
        keep &= ts < to_ms
    value = np.array([math.nan if p.value is None else p.value for p in points], np.float64)
    qualities = [p.quality for p in points]
    if any(q is not None for q in qualities):
        quality = np.array([0 if q is None else _QUALITY.get(q, _BAD) for q in qualities], np.uint8)
    else:
        quality = np.zeros(n, np.uint8)
    if chunks is not None and chunks.names:
        pairs = zip(chunks.names, chunks.ts, strict=True)
        tag = np.concatenate([tag, *(np.full(c.shape[0], index[m], np.int32) for m, c in pairs)])
        ts = np.concatenate([ts, *chunks.ts])
        value = np.concatenate([value, *chunks.value])
        quality = np.concatenate([quality, *chunks.quality])
        keep = np.concatenate([keep, np.ones(ts.shape[0] - n, bool)])
        if from_ms is not None:
            keep &= ts >= from_ms
        if to_ms is not None:
            keep &= ts < to_ms
    if not keep.all():
        tag, ts, value, quality = tag[keep], ts[keep], value[keep], quality[keep]
    # renumber to the tags kept, in name order
    names = sorted({seen[i] for i in np.unique(tag).tolist()})
    if names != seen:
        remap = np.array([names.index(x) if x in names else -1 for x in seen], np.int32)
        tag = remap[tag]
    n = int(ts.shape[0])
    key_sorted = n < 2 or bool(
        np.all((tag[1:] > tag[:-1]) | ((tag[1:] == tag[:-1]) & (ts[1:] >= ts[:-1])))
    )
    if not key_sorted:  # one tag's history in stored order usually is: skip the sort
        order = np.lexsort((ts, tag))
        tag, ts, value, quality = tag[order], ts[order], value[order], quality[order]
    if dedup and n:
        first = np.ones(n, bool)
        first[1:] = (tag[1:] != tag[:-1]) | (ts[1:] != ts[:-1])
        tag, ts, value, quality = tag[first], ts[first], value[first], quality[first]
    return PointLog(ts, tag, value, quality, tuple(names))


class HistoryError(Exception):
    """The buffer cannot be read. ``needs_human``: a config, key file or gateway problem
    (the commands exit 78); else the file is unreadable or busy (exit 1)."""

    def __init__(self, message: str, *, needs_human: bool) -> None:
        super().__init__(message)
        self.needs_human = needs_human


def _translated(exc: _BufferError) -> HistoryError:
    return HistoryError(str(exc), needs_human=isinstance(exc, BufferNeedsHumanError))


class History:
    """A read-only view of one gateway's buffer for the review commands. Every buffer error
    surfaces as :class:`HistoryError` (so no other module needs :mod:`buffer`)."""

    def __init__(self, reader: StoreReader) -> None:
        """Private: use :meth:`open` or :meth:`for_config`."""
        self._reader = reader
        self.unreadable = 0
        """Records skipped because they failed authentication (see ``buffer verify``)."""

    @classmethod
    def open(cls, *, path: Path, key_file: Path, gateway_id: str) -> History:
        """Raises :class:`HistoryError` when there is no readable buffer of this gateway."""
        try:
            return cls(StoreReader.open(path=path, key_file=key_file, gateway_id=gateway_id))
        except _BufferError as exc:
            raise _translated(exc) from exc

    @classmethod
    def for_config(cls, cfg: AgentConfig, config_path: Path) -> History:
        paths = resolved_paths(cfg, config_path)
        return cls.open(
            path=paths.buffer_path, key_file=paths.buffer_key_file, gateway_id=cfg.gateway.id
        )

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _payloads(
        self, stream: Stream, from_ms: int | None = None, to_ms: int | None = None
    ) -> Iterator[bytes]:
        try:
            for rec in self._reader.records(stream=stream, from_ms=from_ms, to_ms=to_ms):
                if rec.payload is None:
                    self.unreadable += 1
                    continue
                yield rec.payload
        except _BufferError as exc:
            raise _translated(exc) from exc

    def alarms(self, *, to_ms: int | None = None) -> AlarmLog:
        """Every retained alarm event with ``ts_ms < to_ms`` (all without ``to_ms``): the
        KPIs need occurrences raised before a report's period too."""
        # no bound on creation time: alarm records are few, and a clock step must not hide one
        log = alarm_log(list(self._payloads(Stream.ALARM)))
        if to_ms is None or not len(log) or int(log.ts_ms.max()) < to_ms:
            return log
        keep = np.flatnonzero(log.ts_ms < to_ms)
        return AlarmLog(
            log.ts_ms[keep],
            log.tag[keep],
            log.kind[keep],
            log.event[keep],
            log.level[keep],
            log.occ[keep],
            log.value[keep],
            log.eta_s[keep],
            log.limit[keep],
            log.tags,
            log.occ_ids,
            {int(j): log.users[int(i)] for j, i in enumerate(keep) if i in log.users},
        )

    def events(
        self, *, from_ms: int | None = None, to_ms: int | None = None
    ) -> list[dict[str, Any]]:
        """Event bodies (``kind``, ``ts``, fields) with ``from_ms <= ts < to_ms``."""
        lo = None if from_ms is None else from_ms - _BEFORE_MS
        hi = None if to_ms is None else to_ms + _AFTER_MS
        out = []
        for raw in self._payloads(Stream.EVENT, lo, hi):
            doc = _any_decoder.decode(raw)
            ts = doc.get("ts")
            if not isinstance(ts, int):
                continue
            if (from_ms is None or ts >= from_ms) and (to_ms is None or ts < to_ms):
                out.append(doc)
        return out

    def points(
        self,
        *,
        tags: Collection[str] | None = None,
        from_ms: int | None = None,
        to_ms: int | None = None,
        with_incidents: bool = False,
    ) -> PointLog:
        """Readings of ``tags`` (all without) with ``from_ms <= ts < to_ms`` from telemetry
        records, and with ``with_incidents`` also from the incident recorder's windows (full
        resolution where report-by-exception thinned telemetry; duplicates dropped)."""
        lo = None if from_ms is None else from_ms - _BEFORE_MS
        hi = None if to_ms is None else to_ms + _AFTER_MS
        wanted = None if tags is None else set(tags)
        # With tags: v1 bodies and incident samples are read straight into columns, and a
        # record without a tag's JSON string is not decoded at all (agent/review/pointcols.py).
        rows = None if wanted is None else TagRows(wanted)
        needles = None if wanted is None else [msgspec.json.encode(t) for t in wanted]
        found: list[Point] = []
        for raw in self._payloads(Stream.TELEMETRY, lo, hi):
            if needles is not None and not any(n in raw for n in needles):
                continue
            if rows is not None and raw.startswith(_V1_ROWS):
                rows.read(raw, len(_V1_ROWS))
                continue
            found += _telemetry_points(raw)
        if with_incidents:
            for raw in self._payloads(Stream.INCIDENT):
                if rows is not None:
                    at = raw.find(_SAMPLES_ROWS) if raw.startswith(_SAMPLES) else -1
                    if at >= 0:
                        if rows.needed(raw):
                            rows.read(raw, at + len(_SAMPLES_ROWS))
                        continue
                    if raw.startswith(_NOT_SAMPLES):
                        continue  # open, alarms, close: no readings
                doc = _samples_decoder.decode(raw)  # another key order: decoded in full
                if doc.type == "samples":
                    found += doc.points
        chunks = None if rows is None else rows.chunks
        return point_log(
            found, dedup=with_incidents, tags=wanted, from_ms=from_ms, to_ms=to_ms, chunks=chunks
        )

    def incident_records(self) -> list[dict[str, Any]]:
        """Every retained incident record body (agent/review/recorder.py), in stored order."""
        return [_any_decoder.decode(raw) for raw in self._payloads(Stream.INCIDENT)]
