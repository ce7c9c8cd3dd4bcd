"""The network checks of ``safeedge commission``: clock, broker, ACL, certificate expiry.

Broker: a fresh MQTT client connects exactly as the agent's uplink will (host, port, protocol,
the gateway's client certificate and key, the CA, username and password file), with TLS
verification on (certificate chain and host name). It then publishes, QoS 1, one small message
to ``{root}/commissioning`` (its own topic tree: accepted, reason < 0x80) and one to
``{prefix}/{site}/{gateway}-not-me/commissioning`` (another gateway's tree: MQTT 5 must refuse
it with reason 0x87, not authorised; on MQTT 3.1.1 the broker acknowledges denied publishes, so
the ACL cannot be judged: WARN). Neither is an envelope: nothing enters the platform's streams.

Clock: SNTP (RFC 4330) to each ``--ntp`` server in turn; the first answer gives the offset
``((t2 - t1) + (t3 - t4)) / 2``. Mosquitto exposes no time of its own, so without a reachable
NTP server the clock is not verified (WARN).
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import struct
import threading
import time

import paho.mqtt.client as mqtt
from cryptography import x509
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.codec import root_topic
from agent.config import AgentConfig, ResolvedPaths
from provisioning.commission_model import Check, Options

__all__ = ["broker_checks", "cert_check", "clock_check", "sntp_offset"]

_NTP_EPOCH = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01


def sntp_offset(host: str, port: int = 123, timeout_s: float = 2.0) -> float:
    """The local clock's offset to the server in seconds (positive: the server is ahead).
    Raises OSError (unreachable, timeout) or ValueError (not an NTP answer)."""
    packet = bytearray(48)
    packet[0] = (0 << 6) | (4 << 3) | 3  # leap 0, version 4, mode 3 (client)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout_s)
        t1 = time.time()
        s.sendto(bytes(packet), (host, port))
        data, _ = s.recvfrom(512)
        t4 = time.time()
    if len(data) < 48 or data[0] & 0x7 not in (4, 5):
        raise ValueError("not an NTP server answer")
    t2 = _ntp_time(data, 32)
    t3 = _ntp_time(data, 40)
    if t3 == 0:
        raise ValueError("the server sent no transmit time (not synchronised)")
    return ((t2 - t1) + (t3 - t4)) / 2.0


def _ntp_time(data: bytes, at: int) -> float:
    seconds, fraction = struct.unpack("!II", data[at : at + 8])
    return 0.0 if seconds == 0 else seconds - _NTP_EPOCH + fraction / 2**32


def clock_check(options: Options) -> Check:
    title = f"clock within {options.max_clock_offset_s:g} s"
    errors = []
    for server in options.ntp_servers:
        host, _, port = server.partition(":")
        try:
            offset = sntp_offset(host, int(port or 123))
        except (OSError, ValueError) as exc:
            errors.append(f"{server}: {exc}")
            continue
        ev = f"offset {offset:+.3f} s to NTP {server}"
        if abs(offset) > options.max_clock_offset_s:
            return Check(
                "clock.offset",
                title,
                "WARN",
                ev,
                "timestamps are evidence: sync the clock (timedatectl set-ntp true, "
                "or chrony with the site's time source)",
            )
        return Check("clock.offset", title, "PASS", ev)
    ev = "; ".join(errors) if errors else "no NTP server given"
    return Check(
        "clock.offset",
        title,
        "WARN",
        f"clock not verified: {ev}",
        "give --ntp SERVER (the site's time source); the broker has no clock to ask",
    )


def cert_check(paths: ResolvedPaths, options: Options, now: dt.datetime | None = None) -> Check:
    title = f"client certificate valid for more than {options.cert_warn_days:g} days"
    if paths.cert_file is None:
        return Check(
            "cert.expiry",
            title,
            "WARN",
            "no client certificate configured",
            "give the gateway its own certificate (safeedge identity)",
        )
    try:
        cert = x509.load_pem_x509_certificate(paths.cert_file.read_bytes())
    except (OSError, ValueError) as exc:
        return Check(
            "cert.expiry",
            title,
            "FAIL",
            f"{paths.cert_file}: {exc}",
            "install the certificate: safeedge identity install",
        )
    now = now or dt.datetime.now(dt.UTC)
    left = (cert.not_valid_after_utc - now).total_seconds() / 86400.0
    ev = f"{paths.cert_file}: expires {cert.not_valid_after_utc:%Y-%m-%d} ({left:.1f} days)"
    if left < 0:
        return Check("cert.expiry", title, "FAIL", ev, "ask the platform for a new certificate")
    if left < options.cert_warn_days:
        return Check("cert.expiry", title, "WARN", ev, "renew it before it expires")
    return Check("cert.expiry", title, "PASS", ev)


class _Probe:
    """One MQTT connection, with the outcome of CONNECT and of each PUBACK (by message id)."""

    def __init__(self, cfg: AgentConfig, paths: ResolvedPaths) -> None:
        up = cfg.uplink
        self.v5 = up.protocol == "mqtt5"
        proto = MQTTProtocolVersion.MQTTv5 if self.v5 else MQTTProtocolVersion.MQTTv311
        client_id = f"{up.client_id or f'safeedge-{cfg.gateway.site}-{cfg.gateway.id}'}-commission"
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id, protocol=proto
        )
        self.client.suppress_exceptions = True
        self.connected = threading.Event()
        self.connect_reason = ""
        self.acks: dict[int, int] = {}
        self._acked = threading.Condition()
        if up.username is not None:
            password = None
            if paths.password_file is not None:
                password = paths.password_file.read_text().strip()
            self.client.username_pw_set(up.username, password)
        if up.tls is not None and paths.ca_file is not None:
            ctx = ssl.create_default_context(cafile=str(paths.ca_file))  # verifies the host name
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            if paths.cert_file is not None and paths.tls_key_file is not None:
                ctx.load_cert_chain(str(paths.cert_file), str(paths.tls_key_file))
            self.client.tls_set_context(ctx)
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.client.on_disconnect = self._on_disconnect
        self.ended = threading.Event()  # CONNACK came, or the broker closed the connection

    def _on_connect(
        self, client: object, userdata: object, flags: object, rc: object, props: object = None
    ) -> None:
        self.connect_reason = str(rc)
        if not getattr(rc, "is_failure", False):
            self.connected.set()
        self.ended.set()

    def _on_disconnect(self, client: object, userdata: object, flags: object, rc: object,
                       props: object = None) -> None:  # fmt: skip
        # a TLS 1.3 broker rejects a client certificate after the client's handshake ended
        self.connect_reason = self.connect_reason or f"connection closed by the broker ({rc})"
        self.ended.set()

    def _on_publish(
        self, client: object, userdata: object, mid: int, rc: object, props: object = None
    ) -> None:
        with self._acked:
            self.acks[mid] = int(getattr(rc, "value", 0))
            self._acked.notify_all()

    def publish(self, topic: str, timeout_s: float) -> int | None:
        """The PUBACK reason code (0 on MQTT 3.1.1), None when none came in time."""
        info = self.client.publish(topic, b'{"commissioning": true}', qos=1)
        deadline = time.monotonic() + timeout_s
        with self._acked:
            while info.mid not in self.acks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._acked.wait(left)
            return self.acks[info.mid]


def broker_checks(cfg: AgentConfig, paths: ResolvedPaths, timeout_s: float = 5.0) -> list[Check]:
    """``broker.tls``, ``broker.publish_own`` and ``broker.acl`` (see the module docstring)."""
    up = cfg.uplink
    ids = ("broker.tls", "broker.publish_own", "broker.acl")
    titles = (
        "broker reachable with the gateway's certificate, TLS verified",
        "publish to its own topics accepted",
        "publish to another gateway's topic refused",
    )
    if not up.enabled:
        return [
            Check(i, t, "WARN", "uplink disabled in the config", "enable [uplink]")
            for i, t in zip(ids, titles, strict=True)
        ]
    where = f"{up.host}:{up.port}"
    try:
        probe = _Probe(cfg, paths)
        probe.client.connect(up.host, up.port, keepalive=30)
    except (OSError, ssl.SSLError, ValueError) as exc:
        fix = (
            "check the CA file and that the broker's certificate names this host"
            if isinstance(exc, ssl.SSLError)
            else "check host, port, firewall and files"
        )
        first = Check(ids[0], titles[0], "FAIL", f"{where}: {exc}", fix)
        rest = [
            Check(i, t, "FAIL", "not run: no connection to the broker", fix)
            for i, t in zip(ids[1:], titles[1:], strict=True)
        ]
        return [first, *rest]
    probe.client.loop_start()
    try:
        probe.ended.wait(timeout_s)
        if not probe.connected.is_set():
            reason = probe.connect_reason or f"no CONNACK within {timeout_s:g} s"
            fail = Check(
                ids[0],
                titles[0],
                "FAIL",
                f"{where}: refused: {reason}",
                "the broker must accept this certificate (its CN is the ACL user)",
            )
            return [
                fail,
                *(
                    Check(i, t, "FAIL", "not run: not connected", fail.fix)
                    for i, t in zip(ids[1:], titles[1:], strict=True)
                ),
            ]
        tls = "TLS verified (chain and host name)" if up.tls else "plain TCP, no TLS"
        out = [
            Check(
                ids[0],
                titles[0],
                "PASS" if up.tls else "FAIL",
                f"{where}: {tls}",
                "" if up.tls else "configure [uplink.tls] with the gateway's certificate",
            )
        ]
        root = root_topic(up.prefix, cfg.gateway.site, cfg.gateway.id)
        own = probe.publish(f"{root}/commissioning", timeout_s)
        if own is not None and own < 0x80:
            out.append(Check(ids[1], titles[1], "PASS", f"{root}/commissioning: PUBACK {own:#04x}"))
        else:
            got = "no PUBACK" if own is None else f"PUBACK {own:#04x}"
            out.append(
                Check(
                    ids[1],
                    titles[1],
                    "FAIL",
                    f"{root}/commissioning: {got}",
                    f"the broker ACL must let this gateway publish to {root}/#",
                )
            )
        other = root_topic(up.prefix, cfg.gateway.site, f"{cfg.gateway.id}-not-me")[:200]
        code = probe.publish(f"{other}/commissioning", timeout_s)
        ev = f"{other}/commissioning: " + ("no PUBACK" if code is None else f"PUBACK {code:#04x}")
        if not probe.v5:
            out.append(
                Check(
                    ids[2],
                    titles[2],
                    "WARN",
                    ev + " (MQTT 3.1.1 cannot tell)",
                    'use protocol = "mqtt5" to see refused publishes',
                )
            )
        elif code == 0x87:
            out.append(Check(ids[2], titles[2], "PASS", ev + " (not authorised)"))
        else:
            out.append(
                Check(
                    ids[2],
                    titles[2],
                    "FAIL",
                    ev,
                    "the ACL lets this gateway write another gateway's topics: "
                    "pattern readwrite <prefix>/+/%u/# only",
                )
            )
        return out
    finally:
        probe.client.disconnect()
        probe.client.loop_stop()
