"""The platform side in small: subscribe to gateways' uplinks, decode, de-duplicate, find gaps.

:class:`Listener` subscribes to ``{prefix}/{site or +}/{gateway or +}/#`` and calls
``on_message`` once per received message, on the MQTT network thread, with a :class:`Message`:
topic parts, the decoded envelope and body, and sequence bookkeeping. Other programs (the demo,
tests) embed it; ``safeedge listen`` prints what it receives.

Sequence bookkeeping (:class:`SeqTracker`, sans-I/O) per (site, gateway, stream):

- the first record seen sets the baseline (history before it is unknown, not a gap);
- a record whose seq jumps past ``highest + 1`` is delivered with ``gap`` = the missing range;
- a record that fills an earlier gap is delivered with ``late = True`` (a backlog resend);
- any other seq at or below the highest is a duplicate (same ``id``: at-least-once delivery)
  and is counted, never delivered.

Malformed messages are delivered with ``error`` set and nothing decoded (permanent: the same
bytes will never decode). Retained ``state``/``meta`` and the ``cmd`` topics carry no envelope.

With ``validate=True`` every message is also checked against the published JSON Schemas
(docs/schemas, :class:`SchemaValidator`); violations are delivered in ``schema_errors`` and
counted in ``invalid`` (the message is still decoded and delivered when it decodes).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from dataclasses import replace as _replace
from pathlib import Path
from typing import Any, Final, Literal

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

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
    decode_telemetry,
)
from agent.config import TlsConfig

__all__ = [
    "SCHEMA_DIR",
    "Body",
    "Gap",
    "Listener",
    "ListenerError",
    "ListenerStats",
    "Message",
    "SchemaValidator",
    "SeqTracker",
]

log = logging.getLogger(__name__)

_MAX_GAPS_PER_STREAM: Final = 1000
SCHEMA_DIR: Final = Path(__file__).resolve().parents[1] / "docs" / "schemas"
"""The JSON Schemas of the wire contract (in the source tree: docs/schemas)."""
_ENVELOPED: Final = frozenset(("telemetry", "alarm", "event"))

Body = list[Point] | Alarm | dict[str, Any] | State | None


class ListenerError(RuntimeError):
    """Could not connect or subscribe (broker down: retry; refused: check credentials)."""


@dataclass(frozen=True, slots=True)
class Gap:
    """Records ``first``..``last`` (inclusive) of one stream were skipped."""

    stream: str
    first: int
    last: int

    @property
    def count(self) -> int:
        return self.last - self.first + 1


@dataclass(frozen=True, slots=True)
class Message:
    """One received message. ``kind`` is the topic after the root (``telemetry``, ``alarm``,
    ``event``, ``state``, ``meta``, ``cmd``, ``cmd/result``)."""

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


@dataclass(slots=True)
class ListenerStats:
    received: int = 0
    delivered: int = 0
    duplicates: int = 0
    gaps: int = 0
    missing: int = 0  # records reported in gaps
    late: int = 0  # gap records that arrived afterwards
    malformed: int = 0
    invalid: int = 0  # messages violating the JSON Schemas (validate=True)


class SchemaValidator:
    """Checks payloads against docs/schemas with ``jsonschema`` (a dev/platform dependency).

    :meth:`errors` returns human-readable violations, empty when valid. Raises RuntimeError
    at construction when ``jsonschema`` or the schema files are missing (install the dev
    extras; run from the source tree).
    """

    KINDS: Final = ("telemetry", "alarm", "event", "state", "meta", "cmd", "cmd/result")

    def __init__(self, directory: Path = SCHEMA_DIR) -> None:
        try:
            import jsonschema  # type: ignore[import-untyped]
        except ImportError as exc:
            raise RuntimeError("validation needs the jsonschema package (dev extras)") from exc
        try:
            docs = {p.stem: json.loads(p.read_text()) for p in directory.glob("*.json")}
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"cannot read the schemas in {directory}: {exc}") from exc
        missing = {"envelope", "telemetry", "alarm", "event", "state", "meta", "cmd", "cmd_result"}
        missing -= set(docs)
        if missing:
            raise RuntimeError(f"schemas {sorted(missing)} missing in {directory}")
        v = jsonschema.Draft202012Validator
        self._v = {name: v(doc) for name, doc in docs.items()}
        self._cmd_payload = v(docs["cmd"]["$defs"]["payload"])

    def errors(self, kind: str, payload: bytes) -> list[str]:
        """Violations of ``payload`` on topic ``kind`` (``R/{kind}``); [] when valid."""
        try:
            doc = json.loads(payload)
        except ValueError as exc:
            return [f"not JSON: {exc}"]
        if kind in ("telemetry", "alarm", "event"):
            out = self._check("envelope", doc)
            if not out and isinstance(doc, dict):
                out = self._check(kind, doc["body"], "body")
            return out
        if kind == "cmd":
            out = self._check("cmd", doc)
            if not out:
                try:
                    inner = json.loads(base64.b64decode(doc["payload"], validate=True))
                except (binascii.Error, ValueError) as exc:
                    return [f"payload: not base64 JSON: {exc}"]
                out = self._check_with(self._cmd_payload, inner, "payload")
            return out
        name = kind.replace("/", "_")
        return self._check(name, doc) if name in self._v else []

    def _check(self, name: str, doc: object, where: str = "") -> list[str]:
        return self._check_with(self._v[name], doc, where)

    @staticmethod
    def _check_with(validator: Any, doc: object, where: str) -> list[str]:
        out = []
        for err in validator.iter_errors(doc):
            path = "/".join(str(p) for p in err.absolute_path)
            at = "/".join(x for x in (where, path) if x) or "(root)"
            out.append(f"{at}: {err.message}")
        return out


Verdict = Literal["new", "late", "duplicate"]


@dataclass(slots=True)
class _StreamSeq:
    highest: int
    holes: list[list[int]] = field(default_factory=list)  # [first, last] ranges, ascending


class SeqTracker:
    """Per-(site, gateway, stream) sequence state (see the module docstring)."""

    def __init__(self) -> None:
        self._streams: dict[tuple[str, str, str], _StreamSeq] = {}

    def observe(self, site: str, gateway: str, stream: str, seq: int) -> tuple[Verdict, Gap | None]:
        key = (site, gateway, stream)
        st = self._streams.get(key)
        if st is None:
            self._streams[key] = _StreamSeq(seq)
            return "new", None
        if seq == st.highest + 1:
            st.highest = seq
            return "new", None
        if seq > st.highest:
            gap = Gap(stream, st.highest + 1, seq - 1)
            st.holes.append([gap.first, gap.last])
            del st.holes[:-_MAX_GAPS_PER_STREAM]
            st.highest = seq
            return "new", gap
        for i, (first, last) in enumerate(st.holes):
            if first <= seq <= last:
                parts = [[first, seq - 1], [seq + 1, last]]
                st.holes[i : i + 1] = [p for p in parts if p[0] <= p[1]]
                return "late", None
        return "duplicate", None

    def missing(self, site: str, gateway: str, stream: str) -> list[tuple[int, int]]:
        """Ranges still missing for one stream."""
        st = self._streams.get((site, gateway, stream))
        return [] if st is None else [(a, b) for a, b in st.holes]


class Listener:
    """A subscriber to gateway uplinks. ``on_message`` runs on the network thread and must be
    quick; its exceptions are logged and swallowed. Thread-safe ``stats``."""

    def __init__(
        self,
        *,
        host: str,
        port: int = 1883,
        on_message: Callable[[Message], None],
        prefix: str = "safeedge/v1",
        site: str | None = None,
        gateway: str | None = None,
        username: str | None = None,
        password: str | None = None,
        tls: TlsConfig | None = None,
        client_id: str = "",
        session_expiry_s: int = 0,
        validate: bool = False,
    ) -> None:
        """``session_expiry_s`` > 0 (with a fixed ``client_id``) keeps the broker-side session
        across disconnects, so QoS 1 messages published while the listener reconnects are
        queued for it instead of lost (the broker needs persistence to survive its own restart).
        ``validate`` checks every message against the JSON Schemas (see the module docstring;
        raises RuntimeError when ``jsonschema`` is not installed).
        """
        self._validator = SchemaValidator() if validate else None
        if session_expiry_s and not client_id:
            raise ValueError("a persistent session (session_expiry_s > 0) needs a client_id")
        self._session_expiry_s = session_expiry_s
        self._host, self._port = host, port
        self._prefix = prefix.rstrip("/")
        self.topic = f"{self._prefix}/{site or '+'}/{gateway or '+'}/#"
        self._on_message_cb = on_message
        self._tracker = SeqTracker()
        self._lock = threading.Lock()
        self._stats = ListenerStats()
        self._subscribed = threading.Event()
        self._refused: str | None = None
        c = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        c.suppress_exceptions = True
        if username is not None:
            c.username_pw_set(username, password)
        if tls is not None:
            ctx = ssl.create_default_context(cafile=tls.ca_file)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            if tls.cert_file is not None:
                ctx.load_cert_chain(tls.cert_file, tls.key_file)
            c.tls_set_context(ctx)
        c.reconnect_delay_set(1, 10)
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        self._client = c

    @property
    def stats(self) -> ListenerStats:
        with self._lock:
            return ListenerStats(**{k: getattr(self._stats, k) for k in ListenerStats.__slots__})

    def missing(self, site: str, gateway: str, stream: str) -> list[tuple[int, int]]:
        with self._lock:
            return self._tracker.missing(site, gateway, stream)

    def start(self, timeout_s: float = 5.0) -> None:
        """Connect and subscribe; returns once subscribed (reconnects by itself afterwards).

        Raises :class:`ListenerError` when not subscribed within ``timeout_s``.
        """
        props = None
        clean_start: bool | Literal[3] = mqtt.MQTT_CLEAN_START_FIRST_ONLY
        if self._session_expiry_s:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = self._session_expiry_s
            clean_start = False
        self._client.connect_async(
            self._host, self._port, keepalive=30, clean_start=clean_start, properties=props
        )
        self._client.loop_start()
        if not self._subscribed.wait(timeout_s):
            self.stop()
            why = f"refused: {self._refused}" if self._refused else "no answer"
            raise ListenerError(
                f"could not subscribe to {self.topic!r} on {self._host}:{self._port} "
                f"within {timeout_s} s ({why})"
            )

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> Listener:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- network thread --------------------------------------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: object,
        reason: ReasonCode,
        props: object,
    ) -> None:
        if reason.is_failure:
            self._refused = str(reason)
            return
        client.subscribe(self.topic, qos=1)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: object, mid: int, codes: list[ReasonCode], p: object
    ) -> None:
        if any(code.is_failure for code in codes):
            self._refused = ", ".join(str(c) for c in codes)
            return
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        message = self.handle(msg.topic, bytes(msg.payload), retained=bool(msg.retain))
        if message is None:
            return
        try:
            self._on_message_cb(message)
        except Exception:  # the subscriber must survive a bad callback
            log.exception("listener callback failed on %s", msg.topic)

    def handle(self, topic: str, payload: bytes, *, retained: bool = False) -> Message | None:
        """Decode one message and update the bookkeeping: the :class:`Message` to deliver, or
        None for a duplicate (which is counted). Public so captured traffic can be replayed."""
        with self._lock:
            self._stats.received += 1
        parts = topic[len(self._prefix) + 1 :].split("/", 2)
        if not topic.startswith(self._prefix + "/") or len(parts) < 3:
            return self._malformed(topic, "", "", "", payload, retained, "unexpected topic")
        site, gateway, kind = parts
        base = Message(topic, site, gateway, kind, payload, retained)
        if self._validator is not None and payload:
            problems = tuple(self._validator.errors(kind, payload))
            if problems:
                with self._lock:
                    self._stats.invalid += 1
                base = _replace(base, schema_errors=problems)
        try:
            message = self._decode(base)
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
                    self._stats.missing += gap.count
                    message = _replace(message, gap=gap)
                if verdict == "late":
                    self._stats.late += 1
                    message = _replace(message, late=True)
            self._stats.delivered += 1
        return message

    def _decode(self, m: Message) -> Message:
        if m.kind in _ENVELOPED:
            env = decode_envelope(m.payload)
            if (env.site, env.gw, env.stream) != (m.site, m.gateway, m.kind):
                raise CodecError(f"envelope {env.site}/{env.gw}/{env.stream} on topic {m.topic}")
            body: Body
            if env.stream == "telemetry":
                body = decode_telemetry(env.body)
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

    def _malformed(
        self, topic: str, site: str, gw: str, kind: str, payload: bytes, retained: bool, error: str
    ) -> Message:
        with self._lock:
            self._stats.malformed += 1
            self._stats.delivered += 1
        return Message(topic, site, gw, kind, payload, retained, error=error)
