"""What the platform does with one received uplink message, without any I/O.

:class:`Inbox` turns ``(topic, payload, retained)`` into a :class:`Message`: topic parts, the
decoded envelope and body, and sequence findings from :class:`central.seqtrack.SeqTracker`
per (site, gateway, stream); a ``seq_gap`` event marks the range it names as accounted for
(reported lost by the gateway, not missing) in that tracker. Duplicates are counted and not
delivered (``handle`` returns None). Malformed messages are delivered with ``error`` set and
nothing decoded (permanent: the same bytes will never decode). Retained ``state``/``meta``
and the ``cmd`` topics carry no envelope, so they take no part in sequence tracking.

With a :class:`central.schema.SchemaValidator` every message is also checked against the
published JSON Schemas; violations are delivered in ``schema_errors`` and counted in
``invalid`` (the message is still decoded and delivered when it decodes).

Thread-safe: :class:`central.listen.Listener` calls :meth:`Inbox.handle` on the MQTT network
thread while other threads read :attr:`Inbox.stats`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from dataclasses import replace as _replace
from typing import Any, Final

import msgspec

from agent.codec import (
    Alarm,
    CodecError,
    Envelope,
    Point,
    State,
    decode_alarm,
    decode_envelope,
    decode_event,
    decode_state,
)
from agent.codec_v2 import StatRow, decode_telemetry_any
from agent.uplink.encoding import PayloadError, decode_payload
from central.schema import SchemaValidator
from central.seqtrack import Gap, SeqTracker
from central.shared import SharedSeqTracker

__all__ = ["Body", "Inbox", "ListenerStats", "Message"]

_ENVELOPED: Final = frozenset(("telemetry", "alarm", "event"))

Body = list[Point] | tuple[int, list[StatRow]] | Alarm | dict[str, Any] | State | None
"""Telemetry: points (body v1 or v2 groups) or ``(window_ms, rows)`` of a statistics record."""


@dataclass(frozen=True, slots=True)
class Message:
    """One received message. ``kind`` is the topic after the root (``telemetry``, ``alarm``,
    ``event``, ``state``, ``meta``, ``cmd``, ``cmd/result``). ``payload`` is the JSON as
    received or, for a compressed message, as inflated; ``encoding`` says which
    (``json`` | ``json+zlib``)."""

    topic: str
    site: str
    gateway: str
    kind: str
    payload: bytes
    retained: bool
    envelope: Envelope | None = None
    body: Body = None
    gap: Gap | None = None
    late: bool = False
    error: str | None = None
    schema_errors: tuple[str, ...] = ()
    encoding: str = "json"


@dataclass(slots=True)
class ListenerStats:
    received: int = 0
    delivered: int = 0
    duplicates: int = 0
    gaps: int = 0
    missing: int = 0  # records reported in gaps (not counting those the gateway reported lost)
    accounted: int = 0  # records the gateways reported lost in seq_gap events
    late: int = 0  # gap records that arrived afterwards
    malformed: int = 0
    invalid: int = 0  # messages violating the JSON Schemas (validator given)


class Inbox:
    """Decoding, validation and sequence bookkeeping for messages under one topic ``prefix``."""

    def __init__(
        self,
        *,
        prefix: str,
        validator: SchemaValidator | None = None,
        tracker: SharedSeqTracker | None = None,
    ) -> None:
        """``tracker``: sequence state shared with other inboxes (consumers of one shared
        subscription, :mod:`central.shared`); None: this inbox's own."""
        self._prefix = prefix.rstrip("/")
        self._validator = validator
        self._tracker: SeqTracker | SharedSeqTracker = tracker or SeqTracker()
        self._lock = threading.Lock()
        self._stats = ListenerStats()

    @property
    def stats(self) -> ListenerStats:
        """A snapshot of the counters."""
        with self._lock:
            return ListenerStats(**{k: getattr(self._stats, k) for k in ListenerStats.__slots__})

    def missing(self, site: str, gateway: str, stream: str) -> list[tuple[int, int]]:
        """Seq ranges of one stream still missing (see :class:`SeqTracker`)."""
        with self._lock:
            return self._tracker.missing(site, gateway, stream)

    def handle(self, topic: str, payload: bytes, *, retained: bool = False) -> Message | None:
        """Decode one message and update the bookkeeping: the :class:`Message` to deliver, or
        None for a duplicate (which is counted)."""
        with self._lock:
            self._stats.received += 1
        parts = topic[len(self._prefix) + 1 :].split("/", 2)
        if not topic.startswith(self._prefix + "/") or len(parts) < 3:
            return self._malformed(topic, "", "", "", payload, retained, "unexpected topic")
        site, gateway, kind = parts
        encoding = "json"
        if kind in _ENVELOPED and payload[:1] == b"\x78":  # zlib (design/UPLINK.md)
            try:
                payload, encoding = decode_payload(payload), "json+zlib"
            except PayloadError as exc:
                return self._malformed(topic, site, gateway, kind, payload, retained, str(exc))
        base = Message(topic, site, gateway, kind, payload, retained, encoding=encoding)
        if self._validator is not None and payload:
            problems = tuple(self._validator.errors(kind, payload))
            if problems:
                with self._lock:
                    self._stats.invalid += 1
                base = _replace(base, schema_errors=problems)
        try:
            message = _decode(base)
        except CodecError as exc:
            return self._malformed(topic, site, gateway, kind, payload, retained, str(exc))
        env = message.envelope
        with self._lock:
            if env is not None:
                verdict, gap = self._tracker.observe(site, gateway, env.stream, env.seq)
                if verdict == "duplicate":
                    self._stats.duplicates += 1
                    return None
                if gap is not None:
                    self._stats.gaps += 1
                    self._stats.missing += gap.missing
                    message = _replace(message, gap=gap)
                if verdict == "late":
                    self._stats.late += 1
                    message = _replace(message, late=True)
                lost = _reported_lost(message)
                if lost is not None:
                    self._stats.accounted += self._tracker.account(site, gateway, *lost)
            self._stats.delivered += 1
        return message

    def _malformed(
        self, topic: str, site: str, gw: str, kind: str, payload: bytes, retained: bool, error: str
    ) -> Message:
        with self._lock:
            self._stats.malformed += 1
            self._stats.delivered += 1
        return Message(topic, site, gw, kind, payload, retained, error=error)


def _reported_lost(m: Message) -> tuple[str, int, int] | None:
    """``(stream, from_seq, to_seq)`` of a well-formed ``seq_gap`` event, else None (a
    malformed one is delivered as it is and accounts for nothing; ``--validate`` names it)."""
    body = m.body
    if m.kind != "event" or not isinstance(body, dict) or body.get("kind") != "seq_gap":
        return None
    stream, lo, hi = body.get("stream"), body.get("from_seq"), body.get("to_seq")
    if not isinstance(stream, str) or stream not in _ENVELOPED:
        return None
    if type(lo) is not int or type(hi) is not int or not 1 <= lo <= hi:  # bool is no seq
        return None
    return stream, lo, hi


def _decode(m: Message) -> Message:
    """``m`` with envelope and body decoded; raises CodecError (permanent) when they do not."""
    if m.kind in _ENVELOPED:
        env = decode_envelope(m.payload)
        if (env.site, env.gw, env.stream) != (m.site, m.gateway, m.kind):
            raise CodecError(f"envelope {env.site}/{env.gw}/{env.stream} on topic {m.topic}")
        body: Body
        if env.stream == "telemetry":
            body = decode_telemetry_any(env.v, env.body)  # v1 points, v2 groups or stats
        elif env.stream == "alarm":
            body = decode_alarm(env.body)
        else:
            body = decode_event(env.body)
        return _replace(m, envelope=env, body=body)
    if m.kind == "state":
        return _replace(m, body=decode_state(m.payload) if m.payload else None)
    if m.kind in ("meta", "cmd/result") and m.payload:
        try:
            return _replace(m, body=msgspec.json.decode(m.payload, type=dict[str, Any]))
        except msgspec.DecodeError as exc:
            raise CodecError(f"malformed {m.kind}: {exc}") from exc
    return m
