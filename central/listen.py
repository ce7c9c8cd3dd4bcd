"""The platform side in small: subscribe to gateways' uplinks over MQTT.

:class:`Listener` subscribes to ``{prefix}/{site or +}/{gateway or +}/#`` and calls
``on_message`` once per received message, on the MQTT network thread, with a
:class:`central.inbox.Message`. What happens to each message (decoding, de-duplication, gaps,
schema checks) is :class:`central.inbox.Inbox`'s job; this module only owns the MQTT session.
Other programs (the demo, tests) embed it; ``safeedge listen`` prints what it receives.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from typing import Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.config import TlsConfig
from central.inbox import Inbox, ListenerStats, Message
from central.schema import SchemaValidator
from central.shared import SharedSeqTracker

__all__ = ["Listener", "ListenerError", "ListenerStats", "Message"]  # the last two: its API types

log = logging.getLogger(__name__)


class ListenerError(RuntimeError):
    """Could not connect or subscribe (broker down: retry; refused: check credentials)."""


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
        share: str | None = None,
        tracker: SharedSeqTracker | None = None,
    ) -> None:
        """``session_expiry_s`` > 0 (with a fixed ``client_id``) keeps the broker-side session
        across disconnects, so QoS 1 messages published while the listener reconnects are
        queued for it instead of lost (the broker needs persistence to survive its own restart).
        ``validate`` checks every message against the JSON Schemas (see :mod:`central.inbox`;
        raises RuntimeError when ``jsonschema`` is not installed).
        ``share`` subscribes as member of the MQTT 5 shared subscription group
        ``$share/{share}/...``: the broker hands each message to one member of the group, so
        several listeners split a fleet's traffic (see docs/uplink.md "Consumers at scale"
        for what then has to be kept centrally); ``tracker`` is that central sequence state
        when the members run in one process.
        """
        if share is not None and (not share or any(c in share for c in "/+#\0")):
            raise ValueError(f"share group {share!r} must be non-empty without / + # or NUL")
        validator = SchemaValidator() if validate else None
        if session_expiry_s and not client_id:
            raise ValueError("a persistent session (session_expiry_s > 0) needs a client_id")
        self._session_expiry_s = session_expiry_s
        self._host, self._port = host, port
        self._prefix = prefix.rstrip("/")
        self.topic = f"{self._prefix}/{site or '+'}/{gateway or '+'}/#"
        self.subscription = f"$share/{share}/{self.topic}" if share else self.topic
        self._on_message_cb = on_message
        self._inbox = Inbox(prefix=self._prefix, validator=validator, tracker=tracker)
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
        """A snapshot of the counters (thread-safe)."""
        return self._inbox.stats

    def missing(self, site: str, gateway: str, stream: str) -> list[tuple[int, int]]:
        """Seq ranges of one stream still missing (thread-safe)."""
        return self._inbox.missing(site, gateway, stream)

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
                f"could not subscribe to {self.subscription!r} on {self._host}:{self._port} "
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
        client.subscribe(self.subscription, qos=1)

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
        """Decode one message and update the bookkeeping (:meth:`Inbox.handle`): the
        :class:`Message` to deliver, or None for a duplicate (which is counted). Public so
        captured traffic can be replayed."""
        return self._inbox.handle(topic, payload, retained=retained)
