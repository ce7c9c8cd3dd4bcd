"""MQTT uplink: one paho-mqtt 2.2 client, owned by one thread, acknowledgements handed back.

Contract (design/UPLINK.md, design/STACK.md):

- The paho network thread (``loop_start``) is the only thread doing network I/O. Callbacks run
  on it, are tiny and never raise (``suppress_exceptions`` as a last resort). ``on_command``
  is called on that thread with the raw ``R/cmd`` payload: it must return quickly (hand the
  bytes to another thread) and its exceptions are logged and swallowed.
- Every connection is a fresh session (MQTT 5 Clean Start = 1 on every connect, MQTT 3.1.1
  clean session), and ``drop_out_messages()`` runs in ``on_connect``: paho never resends
  anything by itself. SQLite is the source of truth; the caller re-leases what was lost.
- :meth:`Uplink.publish` is QoS 1. Each handed-over token gets exactly one
  :class:`PublishResult` from :meth:`Uplink.take_results`:

  ============  ===========  =========  =====================================================
  outcome       ``accepted`` ``lost``   meaning / what the caller does
  ============  ===========  =========  =====================================================
  accepted      True         False      PUBACK reason < 0x80 (0x00, 0x10 no subscribers): done
  rejected      False        False      PUBACK reason ≥ 0x80 (0x87 not authorized, 0x97 quota
                                        ...): permanent for this message → dead-letter
  lost          False        True       the connection ended before a PUBACK → transient,
                                        re-lease and send again (same id, at-least-once)
  ============  ===========  =========  =====================================================

  MQTT 3.1.1 has no PUBACK reason codes: Mosquitto acknowledges (and drops) a publish that its
  ACL denies, so on 3.1.1 a denied publish is reported *accepted* (design/STACK.md).
- On every connect: ``R/state`` ``{"online": true, ...}`` retained QoS 1 with the session
  number, then ``R/meta`` (if set), then SUBSCRIBE ``R/cmd`` QoS 1. The last will is the same
  state with ``online: false`` (retained, QoS 1); its ``ts`` is when that session's connection
  attempt began (the broker cannot know the time of death). ``session`` counts successful
  connections of this process, from 1.
- A half-open connection (the peer vanished without a FIN) is detected within
  1.5 × ``keepalive_s`` (:func:`mqtt_keepalive`); its in-flight tokens are then ``lost``.
- Reconnects forever: the delay before retry ``n`` (0-based, reset by a successful CONNACK) is
  drawn uniformly from ``[min, min(max, min·2^(n+1))]`` (full jitter over the exponential
  window, so a fleet does not reconnect in lock-step after a broker restart).
- TLS (1.2 or later, CA + optional client certificate) when configured; a TLS failure is a
  failed connection attempt, retried with TLS: never plain text.

Failures: a config that cannot work (unreadable TLS files, a bad topic root) raises
:class:`UplinkConfigError` from the constructor (needs a human). Everything at run time is
transient and retried; refusals by the broker (bad credentials, not authorized) are logged as
needing a human but retried too, so fixing the broker side heals the gateway.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from agent.codec import root_topic, state_payload
from agent.config import UplinkConfig
from agent.logs import RateLimiter, kv

__all__ = [
    "REASON_LOST",
    "PublishResult",
    "Uplink",
    "UplinkConfigError",
    "UplinkStats",
    "backoff_delay",
    "mqtt_keepalive",
]

log = logging.getLogger(__name__)

REASON_LOST: Final = "lost"
_INTERNAL: Final = object()  # token of the uplink's own publishes (state, meta)


class UplinkConfigError(ValueError):
    """The uplink cannot work with this configuration (needs a human)."""


@dataclass(frozen=True, slots=True)
class PublishResult:
    """The broker's answer for one token (see the module docstring's table).

    ``reason_code`` is the PUBACK reason code, or None when no PUBACK came (``lost``).
    ``reason`` is ``"lost"`` or the reason code's name in lower case (``"not authorized"``).
    """

    token: Any  # exactly the object given to publish(); Any so callers can unpack their own type
    accepted: bool
    reason: str
    lost: bool = False
    reason_code: int | None = None


@dataclass(frozen=True, slots=True)
class UplinkStats:
    """Counters since construction (health reporting)."""

    connects: int  # connection attempts
    sessions: int  # successful CONNACKs
    disconnects: int  # sessions that ended
    refused: int  # CONNACKs refusing us (credentials, authorisation)
    published: int  # tokens handed to the client
    accepted: int
    rejected: int
    lost: int


def mqtt_keepalive(keepalive_s: int) -> int:
    """The MQTT keepalive given to paho for a configured ``keepalive_s``: three quarters of it.

    paho sends PINGREQ after one keepalive without traffic and drops the connection when no
    answer came one keepalive later, so its worst case is two keepalives; ¾ of the configured
    value keeps the detection of a half-open connection within 1.5 × ``keepalive_s``.
    """
    return max(1, (3 * keepalive_s) // 4)


def backoff_delay(
    attempt: int, min_s: float, max_s: float, uniform: Callable[[float, float], float]
) -> float:
    """Delay before reconnect attempt ``attempt`` (0-based): ``uniform(min, window)`` where
    ``window = min(max, min·2^(attempt+1))``, never below ``min_s`` nor above ``max(min, max)``.
    """
    hi = min(max(max_s, min_s), min_s * 2.0 ** min(attempt + 1, 62))
    return min(max(uniform(min_s, hi), min_s), hi)


class _ClosingSSLSocket(ssl.SSLSocket):
    """paho 2.2 leaves the socket open when the TLS handshake fails; a gateway that retries
    forever must not leak one descriptor per attempt."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Uplink:
    """The gateway's MQTT connection. Thread-safe; see the module docstring for the contract.

    Arguments (keyword-only): ``config`` the uplink section; ``site`` and ``gateway`` the ids in
    the topic root; ``agent_version`` goes into ``R/state``; ``password`` for the configured
    ``username``; ``on_command`` receives raw ``R/cmd`` payloads on the network thread;
    ``on_results`` is called on the network thread when results become available after
    :meth:`take_results` emptied them (once per batch, not per PUBACK: wake a consumer with it);
    ``clock_ms`` wall-clock epoch milliseconds for the state timestamps.
    """

    def __init__(
        self,
        *,
        config: UplinkConfig,
        site: str,
        gateway: str,
        agent_version: str,
        password: str | None = None,
        on_command: Callable[[bytes], None] | None = None,
        on_results: Callable[[], None] | None = None,
        clock_ms: Callable[[], int] = _wall_ms,
    ) -> None:
        self._cfg = config
        try:
            self.root = root_topic(config.prefix, site, gateway)
        except ValueError as exc:
            raise UplinkConfigError(f"uplink topic root: {exc}") from exc
        self._agent_version = agent_version
        self._on_command = on_command
        self._on_results = on_results
        self._clock_ms = clock_ms
        self._state_topic = f"{self.root}/state"
        self._meta_topic = f"{self.root}/meta"
        self._cmd_topic = f"{self.root}/cmd"
        self._rng = random.Random()
        self._limiter = RateLimiter(60.0)

        self._lock = threading.Lock()
        self._connected = False
        self._stopping = False
        self._started = False
        self._generation = 0  # bumped by every disconnect: tells a publish it raced one
        self._inflight: dict[int, Hashable] = {}
        self._early: dict[int, ReasonCode] = {}  # PUBACKs that beat publish() returning
        self._publishing = 0  # publish() calls between client.publish and registration
        self._results: list[PublishResult] = []
        self._meta: bytes | None = None
        self._attempt = 0
        self._n = {k: 0 for k in UplinkStats.__slots__}

        v5 = config.protocol == "mqtt5"
        self._v5 = v5
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=config.client_id or f"safeedge-{site}-{gateway}",
            clean_session=None if v5 else True,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            reconnect_on_failure=True,
        )
        c = self._client
        c.suppress_exceptions = True
        c.max_inflight_messages_set(config.max_inflight)
        if config.username is not None:
            c.username_pw_set(config.username, password)
        if config.tls is not None:
            c.tls_set_context(self._tls_context())
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_message = self._on_message
        c.on_pre_connect = self._on_pre_connect
        c.on_socket_open = self._on_socket_open

    def _tls_context(self) -> ssl.SSLContext:
        tls = self._cfg.tls
        assert tls is not None
        try:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.sslsocket_class = _ClosingSSLSocket
            if tls.cert_file is not None:
                ctx.load_cert_chain(tls.cert_file, tls.key_file)
            elif tls.key_file is not None:
                raise UplinkConfigError("uplink.tls.key_file is set without cert_file")
        except (OSError, ssl.SSLError) as exc:
            raise UplinkConfigError(f"uplink.tls: cannot load certificates: {exc}") from exc
        return ctx

    # -- caller side ---------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background and keep reconnecting until :meth:`stop`. Non-blocking."""
        with self._lock:
            if self._started:
                return
            self._started = True
        self._set_will()
        self._set_next_delay()
        kwargs: dict[str, Any] = {"clean_start": True} if self._v5 else {}
        self._client.connect_async(
            self._cfg.host, self._cfg.port, mqtt_keepalive(self._cfg.keepalive_s), **kwargs
        )
        self._client.loop_start()
        log.info(kv("uplink_starting", host=self._cfg.host, port=self._cfg.port, root=self.root))

    def stop(self, *, timeout_s: float = 5.0) -> None:
        """Publish ``online: false`` (retained), disconnect cleanly and join the thread.

        In-flight tokens are reported ``lost``; call :meth:`take_results` afterwards.
        Idempotent; returns within about ``timeout_s`` unless a TCP connect is in progress.
        """
        with self._lock:
            if not self._started or self._stopping:
                return
            self._stopping = True
            was_connected = self._connected
        if was_connected:
            info = self._client.publish(self._state_topic, self._state(online=False), 1, True)
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                # If the connection goes away meanwhile, the broker sends the will instead.
                with contextlib.suppress(RuntimeError, ValueError):
                    info.wait_for_publish(timeout_s)
        self._client.disconnect()
        self._client.loop_stop()
        with self._lock:  # in case paho did not call on_disconnect (never connected)
            self._lose_inflight()
            self._connected = False
        log.info(kv("uplink_stopped", **self._n))

    @property
    def connected(self) -> bool:
        """True between a successful CONNACK (after state, meta and subscribe were queued) and
        the end of that connection."""
        return self._connected

    @property
    def inflight(self) -> int:
        """Tokens handed over and not yet answered."""
        with self._lock:
            return len(self._inflight)

    def stats(self) -> UplinkStats:
        with self._lock:
            return UplinkStats(**self._n)

    def publish(
        self, suffix: str, payload: bytes, *, token: Hashable, retain: bool = False
    ) -> bool:
        """QoS 1 to ``{root}/{suffix}``. False when not connected (nothing to answer for this
        token); True when handed to the client (exactly one result for ``token`` will follow).

        Should the connection drop during this call, paho may keep a copy queued; it is
        dropped at the next connect, never sent.
        """
        if not suffix or any(c in suffix for c in "+#\0") or suffix.startswith("/"):
            raise ValueError(f"invalid topic suffix {suffix!r}")
        return self._publish(f"{self.root}/{suffix}", payload, token, retain)

    def take_results(self) -> list[PublishResult]:
        """Every result since the last call, in arrival order. Thread-safe."""
        with self._lock:
            out, self._results = self._results, []
        return out

    def set_meta(self, payload: bytes) -> None:
        """Set ``R/meta`` (retained): published now if connected, and on every (re)connect."""
        with self._lock:
            self._meta = payload
        if self._connected:
            self._publish(self._meta_topic, payload, _INTERNAL, True)

    def publish_untracked(self, suffix: str, payload: bytes) -> bool:
        """QoS 1 to ``{root}/{suffix}`` with no result reported (``cmd/result``: not buffered,
        a platform that misses an answer asks again with a new command). False when not
        connected."""
        if not suffix or any(c in suffix for c in "+#\0") or suffix.startswith("/"):
            raise ValueError(f"invalid topic suffix {suffix!r}")
        return self._publish(f"{self.root}/{suffix}", payload, _INTERNAL, False)

    def rebirth(self) -> bool:
        """Republish the retained ``R/state`` (online, same session) and ``R/meta`` now.
        False when not connected (the next connect publishes both anyway)."""
        with self._lock:
            meta = self._meta
        if not self._publish(self._state_topic, self._state(online=True), _INTERNAL, True):
            return False
        if meta is not None:
            self._publish(self._meta_topic, meta, _INTERNAL, True)
        return True

    def _publish(self, topic: str, payload: bytes, token: Hashable, retain: bool) -> bool:
        with self._lock:
            if not self._connected or self._stopping:
                return False
            generation = self._generation
            self._publishing += 1
        try:
            # Not under the lock: on_publish may run (network thread) before this returns.
            info = self._client.publish(topic, payload, qos=1, retain=retain)
        except BaseException:
            with self._lock:
                self._done_publishing()
            raise
        with self._lock:
            early = self._early.pop(info.mid, None)
            self._done_publishing()
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return False
            if token is _INTERNAL:
                return True
            self._n["published"] += 1
            if generation != self._generation:
                # A disconnect happened meanwhile: we cannot tell whether this went out on the
                # old connection (dropped at reconnect) or a new one. Lost; a duplicate at most.
                self._add(PublishResult(token, False, REASON_LOST, lost=True))
            elif early is not None:
                self._add(self._answer(token, early))
            else:
                self._inflight[info.mid] = token
        return True

    def _done_publishing(self) -> None:
        # An early PUBACK is only meaningful to a publish() call in progress; once none is,
        # what is left is stale (internal publishes, a raced reconnect) and must not be matched
        # to a later publish that reuses the message id after paho's 16-bit counter wraps.
        self._publishing -= 1
        if self._publishing == 0:
            self._early.clear()

    # -- network thread --------------------------------------------------------------------------

    def _state(self, *, online: bool, session: int | None = None) -> bytes:
        return state_payload(
            online=online,
            ts_ms=self._clock_ms(),
            session=self._n["sessions"] if session is None else session,
            agent_version=self._agent_version,
        )

    def _set_will(self) -> None:
        session = self._n["sessions"] + 1
        self._client.will_set(
            self._state_topic, self._state(online=False, session=session), qos=1, retain=True
        )

    def _set_next_delay(self) -> None:
        delay = backoff_delay(
            self._attempt, self._cfg.reconnect_min_s, self._cfg.reconnect_max_s, self._rng.uniform
        )
        self._attempt += 1
        # paho annotates int but computes in float seconds; it waits min_delay after this call.
        self._client.reconnect_delay_set(delay, delay)  # type: ignore[arg-type]

    def _on_pre_connect(self, client: mqtt.Client, userdata: object) -> None:
        with self._lock:
            self._n["connects"] += 1

    def _on_socket_open(self, client: mqtt.Client, userdata: object, sock: Any) -> None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            self._log_limited("nodelay", logging.DEBUG, "uplink_nodelay_failed", error=exc)

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: object,
    ) -> None:
        if reason.is_failure:
            with self._lock:
                self._n["refused"] += 1
            self._log_limited(
                "refused",
                logging.ERROR,
                "uplink_refused",
                reason=str(reason),
                remedy="check credentials, certificate and broker ACL",
            )
            return
        client.drop_out_messages()  # never let paho resend: the store decides
        with self._lock:
            self._n["sessions"] += 1
            self._attempt = 0
            session = self._n["sessions"]
            meta = self._meta
            stopping = self._stopping
        if stopping:
            client.disconnect()
            return
        client.publish(self._state_topic, self._state(online=True, session=session), 1, True)
        if meta is not None:
            client.publish(self._meta_topic, meta, 1, True)
        client.subscribe(self._cmd_topic, qos=1)
        with self._lock:
            self._connected = True
        log.info(kv("uplink_connected", host=self._cfg.host, port=self._cfg.port, session=session))

    def _on_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        self._set_will()
        self._set_next_delay()
        self._log_limited(
            "connect_fail",
            logging.WARNING,
            "uplink_connect_failed",
            host=self._cfg.host,
            port=self._cfg.port,
            attempt=self._attempt,
        )

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: object,
    ) -> None:
        with self._lock:
            was_connected = self._connected
            self._connected = False
            self._lose_inflight()
            stopping = self._stopping
            if was_connected:
                self._n["disconnects"] += 1
        if self._on_results is not None:
            self._notify_results()
        if stopping:
            return
        self._set_will()
        self._set_next_delay()
        if was_connected:
            log.warning(kv("uplink_disconnected", reason=str(reason)))

    def _on_publish(
        self, client: mqtt.Client, userdata: object, mid: int, reason: ReasonCode, props: object
    ) -> None:
        with self._lock:
            token = self._inflight.pop(mid, None)
            first = not self._results
            if token is None and self._publishing:
                self._early[mid] = reason  # publish() may not have returned yet
            elif token is not None:
                self._add(self._answer(token, reason))
            first = first and bool(self._results)
        if first and self._on_results is not None:
            self._notify_results()

    def _notify_results(self) -> None:
        assert self._on_results is not None
        try:
            self._on_results()
        except Exception as exc:  # never let the consumer's hook kill the network thread
            self._log_limited("results", logging.ERROR, "uplink_results_hook_failed", error=exc)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if msg.topic != self._cmd_topic or self._on_command is None:
            return
        try:
            self._on_command(bytes(msg.payload))
        except Exception as exc:  # a bad command handler must not kill the network thread
            self._log_limited("cmd", logging.ERROR, "uplink_command_handler_failed", error=exc)

    # -- helpers (caller holds the lock) -----------------------------------------------------------

    def _answer(self, token: Hashable, reason: ReasonCode) -> PublishResult:
        code = reason.value
        return PublishResult(token, code < 0x80, str(reason).lower(), lost=False, reason_code=code)

    def _add(self, result: PublishResult) -> None:
        self._results.append(result)
        key = "lost" if result.lost else "accepted" if result.accepted else "rejected"
        self._n[key] += 1

    def _lose_inflight(self) -> None:
        self._generation += 1
        for token in self._inflight.values():
            self._add(PublishResult(token, False, REASON_LOST, lost=True))
        self._inflight.clear()
        self._early.clear()

    def _log_limited(self, key: str, level: int, event: str, **fields: object) -> None:
        ok, suppressed = self._limiter.allow(key)
        if ok:
            if suppressed:
                fields["suppressed"] = suppressed
            log.log(level, kv(event, **fields))
