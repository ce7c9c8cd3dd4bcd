"""Connect attempts: the paho client a gateway connects with (built, never connected here),
its client id, why an attempt failed, and the rate-limited line that says so (one per 10 s
per cause; the next says how many were not logged). Helpers of
:class:`agent.uplink.client.Uplink`: no socket is opened here."""

from __future__ import annotations

import logging

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.config import UplinkConfig
from agent.logs import RateLimiter, kv
from agent.uplink.puback import AckClient
from agent.uplink.tls import certificate_identity, tls_context

__all__ = ["client_id", "connect_cause", "log_failed_attempt", "paho_client"]


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


def log_failed_attempt(
    log: logging.Logger,
    limiter: RateLimiter,
    *,
    host: str,
    port: int,
    attempt: int,
    error: str | None,
    tls_named: tuple[str, str] | None,
    retry_in_s: float,
) -> None:
    """Log one failed attempt with why it failed and when the next one is, rate-limited per
    cause (the TLS cause by name, with its remedy, when there is one)."""
    ok, suppressed = limiter.allow("attempt" if tls_named is None else tls_named[0])
    if not ok:
        return
    fields: dict[str, object] = {
        "host": host,
        "port": port,
        "attempt": attempt,
        "error": error or "connection closed before CONNACK",
        "retry_in_s": f"{retry_in_s:.1f}",
    }
    if tls_named is not None:
        fields.update(tls_error=tls_named[0], remedy=tls_named[1])
    if suppressed:
        fields["not_logged"] = suppressed
    log.warning(kv("uplink_connect_failed", **fields))


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
