"""Wire codec, JSON profile version 1 (the contract is design/UPLINK.md).

Encoders are pure functions from plain values to the exact bytes put on the wire; decoders are
their inverses for the platform side (the ``listen`` tool, the tests). Everything is UTF-8 JSON
written by ``msgspec.json``: non-ASCII tag names are written as UTF-8, not ``\\u`` escapes.

Shapes::

    envelope   {"v": 1, "site", "gw", "stream", "seq", "id", "ts", "backfill", "body"}
    telemetry  {"points": [[tag, ts, value], [tag, ts, null, "bad_comm"], ...]}
    alarm      {"ts_ms", "tag", "alarm", "event", "level", "value", <extra...>, "alarm_id",
                "severity"}
    event      {"kind", "ts", <fields...>}
    state      {"online", "ts", "session", "agent"}
    cmd/result {"id", "status", "detail", "ts"}

Numbers that are not finite (NaN, ±inf) are written as ``null`` wherever they occur. Severity is
derived from the level *after* the event: 2 → ``critical``, 1 → ``major``, 0 → ``normal`` (a
``clear`` or ``return``: the process value is back inside its limits, or the sensor is healthy
again; ``ack`` of an active alarm keeps that alarm's level and severity).

Failures: encoders raise :class:`ValueError` for input that breaks the contract (a reserved key
in ``extra``, a malformed id); decoders raise :class:`CodecError` (a ``ValueError``, permanent:
the same bytes will never decode) naming what is wrong.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal, NamedTuple

import msgspec

from agent.codec_columns import TelemetryEncoder, telemetry_body_from_rows

__all__ = [
    "ENVELOPE_VERSIONS",
    "PROFILE_VERSION",
    "SEVERITY_BY_LEVEL",
    "Alarm",
    "BytesLike",
    "CmdResult",
    "CodecError",
    "Envelope",
    "Point",
    "State",
    "TelemetryEncoder",
    "alarm_body",
    "check_topic_suffix",
    "cmd_result_payload",
    "decode_alarm",
    "decode_cmd_result",
    "decode_envelope",
    "decode_event",
    "decode_state",
    "decode_telemetry",
    "encode_envelope",
    "envelope_head",
    "event_body",
    "root_topic",
    "state_payload",
    "telemetry_body",
    "telemetry_body_from_rows",
]

PROFILE_VERSION: Final = 1
ENVELOPE_VERSIONS: Final = (1, 2)  # 2: telemetry body v2 (agent/codec_v2.py)
SEVERITY_BY_LEVEL: Final[Mapping[int, str]] = {0: "normal", 1: "major", 2: "critical"}
STREAMS: Final = ("telemetry", "alarm", "event")

_ID_RE: Final = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_ALARM_KEYS: Final = frozenset(
    ("ts_ms", "tag", "alarm", "event", "level", "value", "alarm_id", "severity")
)
_EVENT_KEYS: Final = frozenset(("kind", "ts"))

_encoder: Final = msgspec.json.Encoder()

BytesLike = bytes | bytearray | memoryview | msgspec.Raw
"""What the decoders accept (``Envelope.body`` is a ``msgspec.Raw``)."""


class CodecError(ValueError):
    """Bytes that are not a valid version-1 message (permanent: resending will not help)."""


def _check_id(what: str, value: str) -> None:
    if not _ID_RE.fullmatch(value):
        raise ValueError(f"{what} {value!r} is not a valid id: use [A-Za-z0-9_.-], 1 to 64 chars")


def _finite(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return value


def check_topic_suffix(suffix: str) -> None:
    """A topic suffix under ``R`` (``telemetry``, ``cmd/result``): no wildcard, NUL or leading
    slash; raises ValueError."""
    if not suffix or any(c in suffix for c in "+#\0") or suffix.startswith("/"):
        raise ValueError(f"invalid topic suffix {suffix!r}")


def root_topic(prefix: str, site: str, gateway: str) -> str:
    """``{prefix}/{site}/{gateway}``; raises ValueError for ids or a prefix unfit for a topic."""
    _check_id("site", site)
    _check_id("gateway", gateway)
    if not prefix or prefix.startswith("/") or prefix.endswith("/"):
        raise ValueError(
            f"topic prefix {prefix!r} must be non-empty without a leading or " "trailing '/'"
        )
    if any(c in prefix for c in "+#\0"):
        raise ValueError(f"topic prefix {prefix!r} must not contain '+', '#' or NUL")
    return f"{prefix}/{site}/{gateway}"


# -- envelope --------------------------------------------------------------------------------


class Envelope(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A decoded envelope; ``body`` is the raw JSON of the body (decode it per ``stream``)."""

    v: int
    site: str
    gw: str
    stream: str
    seq: int
    id: str
    ts: int
    backfill: bool
    body: msgspec.Raw


_envelope_decoder: Final = msgspec.json.Decoder(Envelope)


def encode_envelope(
    *,
    site: str,
    gateway: str,
    stream: str,
    seq: int,
    ts_ms: int,
    backfill: bool,
    body: bytes,
    v: int = PROFILE_VERSION,
) -> bytes:
    """Wrap an already-encoded JSON ``body`` (inserted verbatim, not re-parsed).

    ``id`` is ``{gateway}/{stream}/{seq}``: the same record always gets the same id. ``v`` is
    2 for a telemetry body v2 (:func:`agent.codec_v2.body_version` tells it from the body).
    """
    return _encoder.encode(
        Envelope(
            v=v,
            site=site,
            gw=gateway,
            stream=stream,
            seq=seq,
            id=f"{gateway}/{stream}/{seq}",
            ts=ts_ms,
            backfill=backfill,
            body=msgspec.Raw(body),
        )
    )


def envelope_head(
    *, site: str, gateway: str, stream: str, seq: int, ts_ms: int, backfill: bool, v: int
) -> bytes:
    """The bytes of :func:`encode_envelope` before the body: the envelope is
    ``envelope_head(...) + body + b"}"`` (``body`` is its last field), so a body kept in
    another form (compressed) can be framed without being decoded."""
    whole = encode_envelope(
        site=site, gateway=gateway, stream=stream, seq=seq, ts_ms=ts_ms, backfill=backfill,
        body=b"0", v=v,
    )  # fmt: skip
    return whole[:-2]  # "...,"body":0}" without the placeholder and the closing brace


def decode_envelope(data: BytesLike) -> Envelope:
    """Parse and check an envelope (version, stream, seq ≥ 1, id consistent with gw/stream/seq).

    The body is checked to be JSON but not interpreted. Raises :class:`CodecError`.
    """
    try:
        env = _envelope_decoder.decode(data)
        if env.body:
            msgspec.json.decode(env.body)
    except msgspec.DecodeError as exc:
        raise CodecError(f"malformed envelope: {exc}") from exc
    if env.v not in ENVELOPE_VERSIONS:
        raise CodecError(f"unsupported envelope version {env.v} (this decoder reads 1 and 2)")
    if env.v == 2 and env.stream != "telemetry":
        raise CodecError(f"envelope version 2 is for telemetry, not {env.stream!r}")
    if env.stream not in STREAMS:
        raise CodecError(f"unknown stream {env.stream!r} (expected one of {', '.join(STREAMS)})")
    if env.seq < 1:
        raise CodecError(f"seq {env.seq} must be ≥ 1")
    if env.id != f"{env.gw}/{env.stream}/{env.seq}":
        raise CodecError(f"id {env.id!r} does not match gw/stream/seq")
    if not env.body:
        raise CodecError("envelope has no body")
    return env


# -- telemetry -------------------------------------------------------------------------------


class Point(NamedTuple):
    """One telemetry point; ``quality`` is None for a good point; ``value`` is an ``int`` for
    an exact 64-bit integer tag (``drivers.types.SampleBatch.exact``)."""

    tag: str
    ts: int
    value: float | int | None
    quality: str | None


def telemetry_body(points: Sequence[tuple[str, int, float | int | None, str | None]]) -> bytes:
    """``{"points": [[tag, ts, value(, quality)], ...]}``.

    Quality ``None`` (or ``"good"``) means good and is omitted; a value that is not finite is
    written as ``null``; an ``int`` (an exact int64/uint64 reading) is written as a JSON integer,
    digit for digit (a float64 would round past 2**53).
    """
    out: list[list[object]] = []
    for tag, ts, value, quality in points:
        exact = isinstance(value, int) and not isinstance(value, bool)
        row: list[object] = [tag, ts, value if exact else _finite(value)]
        if quality is not None and quality != "good":
            row.append(quality)
        out.append(row)
    return _encoder.encode({"points": out})


_points_decoder: Final = msgspec.json.Decoder(dict[str, list[list[Any]]])


def decode_telemetry(body: BytesLike) -> list[Point]:
    """Inverse of :func:`telemetry_body`; raises :class:`CodecError`."""
    try:
        doc = _points_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise CodecError(f"malformed telemetry body: {exc}") from exc
    if set(doc) != {"points"}:
        raise CodecError(f"telemetry body must have exactly the key 'points', got {sorted(doc)}")
    points: list[Point] = []
    for i, row in enumerate(doc["points"]):
        ok = len(row) in (3, 4) and isinstance(row[0], str) and type(row[1]) is int
        ok = ok and (row[2] is None or (type(row[2]) in (int, float)))
        ok = ok and (len(row) == 3 or isinstance(row[3], str))
        if not ok:
            raise CodecError(f"telemetry point {i} is not [tag, ts, value(, quality)]: {row!r}")
        raw = row[2]
        value = None if raw is None else raw if type(raw) is int else float(raw)
        points.append(Point(row[0], row[1], value, row[3] if len(row) == 4 else None))
    return points


# -- alarm -----------------------------------------------------------------------------------


def alarm_body(
    *,
    tag: str,
    alarm: str,
    event: str,
    level: int,
    value: float | None,
    ts_ms: int,
    alarm_id: str,
    extra: Mapping[str, float | str],
) -> bytes:
    """One alarm event (design/RULES.md) + ``alarm_id`` + ``severity``.

    ``extra`` keys (``limit``, ``reason``, ``rate_per_min``, ``eta_s``) go between ``value`` and
    ``alarm_id``; a key that collides with a fixed field raises ValueError, as does a level
    outside 0..2.
    """
    severity = SEVERITY_BY_LEVEL.get(level)
    if severity is None:
        raise ValueError(f"alarm level {level} is outside 0..2")
    clash = _ALARM_KEYS.intersection(extra)
    if clash:
        raise ValueError(f"alarm extra fields {sorted(clash)} collide with fixed fields")
    doc: dict[str, object] = {
        "ts_ms": ts_ms,
        "tag": tag,
        "alarm": alarm,
        "event": event,
        "level": level,
        "value": _finite(value),
    }
    for key, item in extra.items():
        doc[key] = item if isinstance(item, str) else _finite(item)
    doc["alarm_id"] = alarm_id
    doc["severity"] = severity
    return _encoder.encode(doc)


class Alarm(msgspec.Struct, frozen=True, kw_only=True):
    """A decoded alarm body; ``extra`` holds every field beyond the fixed ones."""

    ts_ms: int
    tag: str
    alarm: str
    event: str
    level: int
    value: float | None
    alarm_id: str
    severity: Literal["normal", "major", "critical"]
    extra: dict[str, Any] = {}


def decode_alarm(body: BytesLike) -> Alarm:
    """Inverse of :func:`alarm_body`; raises :class:`CodecError`."""
    try:
        doc = msgspec.json.decode(body, type=dict[str, Any])
        fixed = {k: doc.pop(k) for k in _ALARM_KEYS if k in doc}
        return msgspec.convert({**fixed, "extra": doc}, Alarm)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CodecError(f"malformed alarm body: {exc}") from exc


# -- event -----------------------------------------------------------------------------------


def event_body(kind: str, ts_ms: int, fields: Mapping[str, object]) -> bytes:
    """``{"kind": kind, "ts": ts_ms, **fields}``; fields must be JSON-encodable by msgspec.

    Raises ValueError when a field is named ``kind`` or ``ts``, TypeError for a value msgspec
    cannot encode. Non-finite floats become ``null``.
    """
    clash = _EVENT_KEYS.intersection(fields)
    if clash:
        raise ValueError(f"event fields {sorted(clash)} collide with fixed fields")
    doc: dict[str, object] = {"kind": kind, "ts": ts_ms}
    for key, item in fields.items():
        doc[key] = _finite(item) if isinstance(item, float) else item
    return _encoder.encode(doc)


def decode_event(body: BytesLike) -> dict[str, Any]:
    """Inverse of :func:`event_body` (a dict with at least ``kind`` and ``ts``)."""
    try:
        doc = msgspec.json.decode(body, type=dict[str, Any])
    except msgspec.DecodeError as exc:
        raise CodecError(f"malformed event body: {exc}") from exc
    if not isinstance(doc.get("kind"), str) or type(doc.get("ts")) is not int:
        raise CodecError("event body needs a string 'kind' and an integer 'ts'")
    return doc


# -- state -----------------------------------------------------------------------------------


class State(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """``encoding`` is ``json`` or ``json+zlib`` (design/UPLINK.md "Compression"); None
    (omitted) from an agent that predates compression: plain JSON."""

    online: bool
    ts: int
    session: int
    agent: str
    encoding: str | None = None


_state_decoder: Final = msgspec.json.Decoder(State)


def state_payload(
    *, online: bool, ts_ms: int, session: int, agent_version: str, encoding: str | None = None
) -> bytes:
    """The retained ``R/state`` payload (and, with ``online=False``, the last will)."""
    return _encoder.encode(
        State(online=online, ts=ts_ms, session=session, agent=agent_version, encoding=encoding)
    )


def decode_state(data: BytesLike) -> State:
    """Inverse of :func:`state_payload`; raises :class:`CodecError`."""
    try:
        return _state_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise CodecError(f"malformed state payload: {exc}") from exc


# -- command result --------------------------------------------------------------------------


class CmdResult(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``R/cmd/result``: ``id`` is None when the command's id could not be read."""

    id: str | None
    status: Literal["ok", "rejected", "error"]
    detail: str
    ts: int


_cmd_result_decoder: Final = msgspec.json.Decoder(CmdResult)


def cmd_result_payload(
    *, id: str | None, status: Literal["ok", "rejected", "error"], detail: str, ts_ms: int
) -> bytes:
    """The ``R/cmd/result`` payload answering one command."""
    return _encoder.encode(CmdResult(id=id, status=status, detail=detail, ts=ts_ms))


def decode_cmd_result(data: BytesLike) -> CmdResult:
    """Inverse of :func:`cmd_result_payload`; raises :class:`CodecError`."""
    try:
        return _cmd_result_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise CodecError(f"malformed cmd/result payload: {exc}") from exc
