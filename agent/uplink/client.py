"""MQTT uplink on the agent's event loop: one paho-mqtt 2.2 client driven by asyncio.

Contract (design/UPLINK.md, design/STACK.md):

- Everything runs on the event loop thread that called :meth:`Uplink.start`. paho's socket is
  registered with that loop (``add_reader``/``add_writer`` from paho's socket callbacks), and
  paho's keepalive bookkeeping (``loop_misc``) runs as a task that sleeps until paho's next
  keepalive deadline, not on a fixed tick. Only the TCP connect and TLS handshake run in an
  executor thread (they block); socket callbacks paho makes there are handed to the loop.
- Callbacks are tiny and never raise (``suppress_exceptions`` as a last resort). ``on_command``
  and ``on_results`` are called on the loop thread from inside paho's read; they must not block.
  ``on_results`` fires when results become available after :meth:`take_results` emptied them,
  and when a session starts (the window opened): wake a consumer with it.
- Every connection is a fresh session (MQTT 5 Clean Start = 1, MQTT 3.1.1 clean session) and
  ``drop_out_messages()`` runs on CONNACK: paho never resends by itself; the store decides.
- :meth:`Uplink.publish` is QoS 1; each handed-over token gets exactly one
  :class:`~agent.uplink.session.PublishResult` (accepted, rejected with the PUBACK reason, or
  lost when the connection ended first; see :class:`~agent.uplink.session.Outcome`). MQTT 3.1.1
  has no PUBACK reason codes: Mosquitto acknowledges (and drops) a publish its ACL denies.
- On every CONNACK: ``R/state`` online (retained, QoS 1, the session number), then ``R/meta``
  (if set), then SUBSCRIBE ``R/cmd`` QoS 1. The will is the same state offline, stamped when
  that attempt began.
- A half-open connection is detected within 1.5 × ``keepalive_s`` (:func:`mqtt_keepalive`); its
  in-flight tokens are then ``lost``. A CONNACK that never comes ends the attempt after one
  MQTT keepalive.
- Reconnects forever with the session's backoff (full jitter). TLS (1.2+, CA, optional client
  certificate) when configured; a TLS failure is a failed attempt, retried with TLS.

Failures: a config that cannot work (unreadable TLS files, a bad topic root) raises
:class:`UplinkConfigError` from the constructor. Everything at run time is retried; refusals by
the broker are logged as needing a human and retried too.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.codec import check_topic_suffix, root_topic
from agent.config import UplinkConfig
from agent.logs import RateLimiter, kv
from agent.uplink.attempts import Attempts, client_id, connect_cause, paho_client
from agent.uplink.encoding import (
    EnvelopeParts,
    encode_payload,
    encoding_of,
    publish_properties,
)
from agent.uplink.farewell import end_connection
from agent.uplink.loopio import LoopSocket
from agent.uplink.session import (
    PublishResult,
    Session,
    UplinkConfigError,
    UplinkStats,
    mqtt_keepalive,
)

__all__ = ["Uplink", "client_id"]

log = logging.getLogger("agent.uplink")  # the name log filters used before the split


class Uplink:
    """The gateway's MQTT connection, owned by one event loop (see the module docstring).

    Arguments (keyword-only): ``config`` the uplink section; ``site`` and ``gateway`` the ids in
    the topic root; ``agent_version`` goes into ``R/state``; ``password`` for the configured
    ``username``; ``on_command`` receives raw ``R/cmd`` payloads; ``on_results`` is called when
    results become available or a session starts; ``clock_ms`` wall-clock epoch milliseconds.
    Not thread-safe: call it from the loop that ran :meth:`start`.
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
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self._cfg = config
        try:
            self.root = root_topic(config.prefix, site, gateway)
        except ValueError as exc:
            raise UplinkConfigError(f"uplink topic root: {exc}") from exc
        self._on_command = on_command
        self._on_results = on_results
        self._state_topic = f"{self.root}/state"
        self._meta_topic = f"{self.root}/meta"
        self._cmd_topic = f"{self.root}/cmd"
        self._limiter = RateLimiter(60.0)
        self._attempts = Attempts(config, log)
        self._encoding = encoding_of(config.compression)
        self._session = Session(
            agent_version=agent_version,
            max_inflight=config.max_inflight,
            reconnect_min_s=config.reconnect_min_s,
            reconnect_max_s=config.reconnect_max_s,
            uniform=random.Random().uniform,
            clock_ms=clock_ms,
            encoding=self._encoding,
        )
        self._meta: bytes | None = None
        self._task: asyncio.Task[None] | None = None
        self._io: LoopSocket | None = None  # paho's socket on the loop, made by the task
        self._stop = asyncio.Event()
        self._stopping = False
        self._waiting: dict[int, asyncio.Future[None]] = {}  # mids stop() waits for
        self._untracked: set[int] = set()  # mids of publish_untracked awaiting PUBACK

        v5 = config.protocol == "mqtt5"
        self._v5 = v5
        self._props: Properties | None = None  # content type of the enveloped streams
        if v5:
            self._props = publish_properties(self._encoding)
        c = self._client = paho_client(config, site=site, gateway=gateway, password=password)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_message = self._on_message

    # -- caller side ---------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background and keep reconnecting until :meth:`stop`. Needs a running
        loop (the one every other call must come from); returns at once. Idempotent."""
        if self._task is not None:
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name="uplink")
        self._task.add_done_callback(self._ended)
        log.info(kv("uplink_starting", host=self._cfg.host, port=self._cfg.port, root=self.root))

    async def stop(self, *, timeout_s: float = 5.0) -> None:
        """Publish ``online: false`` (retained; PUBACK awaited ≤ 70 % of ``timeout_s``, else
        the broker publishes the will: farewell.py), disconnect, end the tasks. In-flight tokens
        are reported ``lost`` (see :meth:`take_results`). Idempotent; returns within about
        ``timeout_s`` unless a TCP connect is in progress."""
        if self._task is None or self._stopping:
            return
        self._stopping = True
        self._stop.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        ack_by = loop.time() + 0.7 * timeout_s  # the rest for the DISCONNECT

        async def within(aw: Awaitable[object]) -> None:  # one budget for the whole stop
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(aw, max(0.0, deadline - loop.time()))

        offline = "not_connected"
        if self._session.connected:
            death = self._session.state(online=False)
            info = self._client.publish(self._state_topic, death, 1, True)
            offline = "not_sent"
            self._client.unsubscribe(self._cmd_topic)  # a flood's PUBLISHes come before PUBACK
            if self._io is not None:
                self._io.unthrottle()  # nothing is polled any more: read them at full speed
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                done = self._waiting[info.mid] = loop.create_future()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done, max(0.0, ack_by - loop.time()))
                offline = "acked" if info.is_published() else "not_acked"
        if self._io is not None and self._io.open:
            end_connection(self._client, v5=self._v5, offline_acked=offline == "acked")
            await within(self._io.closed.wait())
        await within(asyncio.shield(self._task))
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if self._io is not None:
            self._io.close()
        self._session.ended()
        log.info(kv("uplink_stopped", offline_state=offline, **self._stats_fields()))

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:  # a bug: say so loudly
            log.error(kv("uplink_task_failed", error=repr(task.exception())))

    @property
    def last_error(self) -> str | None:
        """Why the last attempt or session ended (status)."""
        return self._attempts.last_error

    @property
    def connected(self) -> bool:
        """True between a successful CONNACK (after state, meta and subscribe were queued) and
        the end of that connection."""
        return self._session.connected and not self._stopping

    @property
    def session(self) -> int:
        """Sessions so far (the current one's number while connected)."""
        return self._session.stats().sessions

    @property
    def inflight(self) -> int:
        """Tokens handed over and not yet answered."""
        return self._session.inflight

    @property
    def room(self) -> int:
        """How many more publishes fit the in-flight window now (0 when not connected)."""
        return self._session.room if not self._stopping else 0

    def stats(self) -> UplinkStats:
        return self._session.stats()

    def publish(
        self, suffix: str, payload: bytes | EnvelopeParts, *, token: Hashable, retain: bool = False
    ) -> bool:
        """QoS 1 to ``{root}/{suffix}``. False when not connected (nothing to answer for this
        token); True when handed over (one result will follow). Beyond ``max_inflight`` paho
        queues the message until the window has room: callers that care use :attr:`room`.
        ``payload`` is the JSON envelope, whole or in :class:`EnvelopeParts` with a deflated
        body; it goes out under the configured encoding (:func:`encode_payload`)."""
        check_topic_suffix(suffix)
        if not self.connected:
            return False
        data = encode_payload(payload, self._encoding)
        mid = self._send(f"{self.root}/{suffix}", data, retain, self._props)
        if mid is None:
            return False
        self._session.sent(mid, token)
        return True

    def take_results(self) -> list[PublishResult]:
        """Every result since the last call, in arrival order."""
        return self._session.take_results()

    def set_meta(self, payload: bytes) -> None:
        """Set ``R/meta`` (retained): published now if connected, and on every (re)connect."""
        self._meta = payload
        if self.connected:
            self._send(self._meta_topic, payload, True)

    def publish_untracked(
        self, suffix: str, payload: bytes, *, max_pending: int | None = None
    ) -> bool:
        """QoS 1 to ``{root}/{suffix}`` with no result reported (``cmd/result``: not buffered,
        a platform that misses an answer asks again). False when not connected, or when
        ``max_pending`` untracked publishes still wait for their PUBACK (bounds what a flood
        of answers can queue in paho)."""
        check_topic_suffix(suffix)
        if not self.connected:
            return False
        if max_pending is not None and len(self._untracked) >= max_pending:
            return False
        mid = self._send(f"{self.root}/{suffix}", payload, False)
        if mid is None:
            return False
        self._untracked.add(mid)
        return True

    def rebirth(self) -> bool:
        """Republish the retained ``R/state`` (online, same session) and ``R/meta`` now.
        False when not connected (the next connect publishes both anyway)."""
        if not self.connected:
            return False
        self._send(self._state_topic, self._session.state(online=True), True)
        if self._meta is not None:
            self._send(self._meta_topic, self._meta, True)
        return True

    def _send(
        self, topic: str, payload: bytes, retain: bool, props: Properties | None = None
    ) -> int | None:
        # On the loop thread with on_socket_register_write set, paho queues and asks for the
        # writer instead of writing: no PUBACK can arrive before the mid is registered.
        info = self._client.publish(topic, payload, qos=1, retain=retain, properties=props)
        return info.mid if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS else None

    # -- the connection task -------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        self._io = LoopSocket(self._client, accept=lambda: not self._stopping)
        keepalive = mqtt_keepalive(self._cfg.keepalive_s)
        kwargs: dict[str, Any] = {}
        if self._v5:
            # Maximum Packet Size: the broker drops (never delivers) anything larger for us.
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.MaximumPacketSize = self._cfg.max_packet_bytes
            kwargs = {"clean_start": True, "properties": props}
        while not self._stopping:
            sessions_before = self._session.stats().sessions
            self._client.will_set(self._state_topic, self._session.attempt(), qos=1, retain=True)
            self._attempts.begin()
            # Only until CONNACK: paho formats a log line per packet once on_log is set.
            self._client.on_log = self._attempts.on_log
            connect = functools.partial(
                self._client.connect, self._cfg.host, self._cfg.port, keepalive, **kwargs
            )
            try:
                await loop.run_in_executor(None, connect)
            except Exception as exc:  # refused, unreachable, timeout, TLS: retried
                self._attempts.failed(str(exc), connect_cause(exc))
            else:
                if self._stopping:  # stop() came during the connect: end it without a session
                    self._client.disconnect()
                await self._io.closed.wait()
            if self._stopping:
                return
            delay = self._session.next_delay()
            if self._session.stats().sessions == sessions_before:  # this attempt got no session
                self._attempts.no_session(delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)

    # -- paho protocol callbacks (loop thread) -------------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: object,
    ) -> None:
        if reason.is_failure:
            self._session.refused()
            self._attempts.refused(reason)
            self._log_limited(
                "refused",
                logging.ERROR,
                "uplink_refused",
                reason=str(reason),
                code=f"{reason.value:#04x}",
                remedy="check credentials, certificate and broker ACL",
            )
            return
        client.drop_out_messages()  # never let paho resend: the store decides
        client.on_log = None
        attempts = self._attempts.session_started()
        session = self._session.accepted()
        if self._stopping:
            client.disconnect()
            return
        client.publish(self._state_topic, self._session.state(online=True), 1, True)
        if self._meta is not None:
            client.publish(self._meta_topic, self._meta, 1, True)
        client.subscribe(self._cmd_topic, qos=1)
        log.info(
            kv(
                "uplink_connected",
                host=self._cfg.host,
                port=self._cfg.port,
                session=session,
                **attempts,
            )
        )
        self._notify()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: object,
    ) -> None:
        was_connected = self._session.ended()
        self._untracked.clear()
        if not was_connected and not self._stopping:
            self._attempts.closed_before_session()
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_result(None)
        self._waiting.clear()
        if self._session.has_results:
            self._notify()
        if was_connected and not self._stopping:
            self._attempts.session_ended(reason)
            log.warning(kv("uplink_disconnected", reason=str(reason)))

    def _on_publish(
        self, client: mqtt.Client, userdata: object, mid: int, reason: ReasonCode, props: object
    ) -> None:
        first = not self._session.has_results
        if self._session.acked(mid, reason.value, str(reason)) and first:
            self._notify()
        self._untracked.discard(mid)
        fut = self._waiting.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if self._io is not None:
            self._io.incoming += 1  # charged to the read budget (loopio)
        if msg.topic != self._cmd_topic or self._on_command is None:
            return
        try:
            self._on_command(bytes(msg.payload))
        except Exception as exc:  # a bad command handler must not break paho's read
            self._log_limited("cmd", logging.ERROR, "uplink_command_handler_failed", error=exc)

    def _notify(self) -> None:
        if self._on_results is None:
            return
        try:
            self._on_results()
        except Exception as exc:  # never let the consumer's hook break paho's read
            self._log_limited("results", logging.ERROR, "uplink_results_hook_failed", error=exc)

    def _stats_fields(self) -> dict[str, int]:
        s = self._session.stats()
        return {k: getattr(s, k) for k in UplinkStats.__slots__}

    def _log_limited(self, key: str, level: int, event: str, **fields: object) -> None:
        ok, suppressed = self._limiter.allow(key)
        if ok:
            if suppressed:
                fields["suppressed"] = suppressed
            log.log(level, kv(event, **fields))
