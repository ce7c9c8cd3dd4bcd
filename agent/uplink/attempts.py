"""Connect attempts: the paho client a gateway connects with (built, never connected here),
its client id, why an attempt failed and the rate-limited line that says so (one per 10 s
per cause; the next says how many were not logged): :class:`Attempts`. Helpers of
:class:`agent.uplink.client.Uplink`: no socket is opened here."""

from __future__ import annotations

import logging
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.config import UplinkConfig
from agent.logs import RateLimiter, kv
from agent.uplink.puback import AckClient
from agent.uplink.tls import certificate_identity, tls_context, tls_failure_after

__all__ = ["Attempts", "client_id", "connect_cause", "paho_client"]


def client_id(config: UplinkConfig, site: str, gateway: str) -> str:
    """``uplink.client_id``; else the client certificate's CN (the identity the broker ties
    the client id to with ``use_username_as_clientid``, docs/uplink.md); else
    ``safeedge-{site}-{gateway}``."""
    if config.client_id:
        return config.client_id
    if config.tls is not None and config.tls.cert_file is not None:
        cn = certificate_identity(config.tls.cert_file)
        if cn is not None:
            return cn
    return f"safeedge-{site}-{gateway}"


def connect_cause(exc: BaseException) -> str:
    """Why a connect failed, one line (TLS reasons are in the message): ``Type: message``."""
    text = " ".join(str(exc).split()) or "no detail"
    return f"{type(exc).__name__}: {text}"[:300]


class Attempts:
    """Why connect attempts fail, between two sessions: the error of the last attempt or
    session (``last_error``, shown by status), paho's socket error of this attempt (reported
    only through its log), the TLS cause named for it, and the failed attempts since the last
    session, logged one line per attempt, at most one per 10 s per cause (the TLS cause by
    name, with its remedy, when there is one). Loop thread only."""

    def __init__(self, config: UplinkConfig, log: logging.Logger) -> None:
        self._cfg = config
        self._log = log
        self._limiter = RateLimiter(10.0)
        self.last_error: str | None = None
        self._failed = 0  # since the last session
        self._down_since = time.monotonic()
        self._read_error: str | None = None  # paho's last socket error of this attempt
        self._tls_named: tuple[str, str] | None = None  # (name, remedy) of this attempt's cause
        self._tls_last: tuple[str, str] | None = None  # the last named since the last session

    def begin(self) -> None:
        """A new attempt starts."""
        self._read_error = None
        self._tls_named = None

    def on_log(self, client: mqtt.Client, userdata: object, level: int, buf: str) -> None:
        """paho's ``on_log`` until CONNACK: a failed read (a TLS alert after the handshake)
        shows only there."""
        if level == mqtt.MQTT_LOG_ERR:
            self._read_error = buf

    def failed(self, error: str, text: str) -> None:
        """This attempt failed with ``error`` (``text``: the line for status and the log)."""
        self.last_error = text
        tls = self._cfg.tls is not None  # a bare EOF after a named cause is that cause again
        self._tls_named = tls_failure_after(error, self._tls_last) if tls else None
        self._tls_last = self._tls_named or self._tls_last

    def closed_before_session(self) -> None:
        """The connection ended before CONNACK: paho's read error, if any, is why."""
        error, self._read_error = self._read_error, None
        if error is not None:
            self.failed(error, error[:300])  # e.g. the broker's TLS alert about our cert

    def refused(self, reason: object) -> None:
        self.last_error = f"refused: {reason}"

    def no_session(self, retry_in_s: float) -> None:
        """The attempt is over without a session: count it and log it (rate-limited)."""
        self._failed += 1
        tls_named = self._tls_named
        ok, suppressed = self._limiter.allow("attempt" if tls_named is None else tls_named[0])
        if not ok:
            return
        fields: dict[str, object] = {
            "host": self._cfg.host,
            "port": self._cfg.port,
            "attempt": self._failed,
            "error": self.last_error or "connection closed before CONNACK",
            "retry_in_s": f"{retry_in_s:.1f}",
        }
        if tls_named is not None:
            fields.update(tls_error=tls_named[0], remedy=tls_named[1])
        if suppressed:
            fields["not_logged"] = suppressed
        self._log.warning(kv("uplink_connect_failed", **fields))

    def session_started(self) -> dict[str, object]:
        """CONNACK: the fields of ``uplink_connected`` (attempts it took, seconds down)."""
        fields: dict[str, object] = {
            "attempts": self._failed + 1,
            "down_s": f"{time.monotonic() - self._down_since:.1f}",
        }
        self._failed = 0
        self._tls_last = None
        return fields

    def session_ended(self, reason: object) -> None:
        self._down_since = time.monotonic()
        self.last_error = f"disconnected: {reason}"


def paho_client(
    config: UplinkConfig, *, site: str, gateway: str, password: str | None
) -> mqtt.Client:
    """paho's client for ``config`` (VERSION2 callbacks, no reconnect of its own: the session's
    backoff decides; exceptions in callbacks suppressed; TLS context set when configured; a
    plain success PUBACK handled without new objects, :mod:`agent.uplink.puback`)."""
    v5 = config.protocol == "mqtt5"
    c = AckClient(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id(config, site, gateway),
        clean_session=None if v5 else True,
        protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        reconnect_on_failure=False,
    )
    c.suppress_exceptions = True
    c.max_inflight_messages_set(config.max_inflight)
    if config.username is not None:
        c.username_pw_set(config.username, password)
    if config.tls is not None:
        c.tls_set_context(tls_context(config.tls))
    return c
