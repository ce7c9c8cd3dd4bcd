"""A real Mosquitto 2.0 broker for tests, on its own free loopback port and config.

``Broker`` writes ``mosquitto.conf`` (and a password file, TLS material, an ACL file) into its
own directory, starts ``/usr/sbin/mosquitto`` and waits until the port accepts connections.
``stop()`` (SIGTERM) / ``kill()`` (SIGKILL) and ``start()`` again reuse the SAME port, to make
outages. Mosquitto started as root drops to the ``mosquitto`` user before reading key files;
the config says ``user root`` so the files in the test's tmp dir stay readable.

Modes: ``anonymous``; ``password`` (``users`` is created with ``mosquitto_passwd``); ``tls``
(a fresh CA, a server certificate for 127.0.0.1/localhost and client certificates made with
``cryptography``; ``require_certificate true`` and ``use_identity_as_username true``, so a
client certificate's CN is its ACL user). ``acl`` lines (``pattern ...``, ``user ...``,
``topic ...``) go into an ``acl_file`` in any mode.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = [
    "MOSQUITTO",
    "Broker",
    "BrokerError",
    "ClientCert",
    "Mode",
    "Received",
    "Subscriber",
    "free_port",
]

MOSQUITTO = "/usr/sbin/mosquitto"
Mode = Literal["anonymous", "password", "tls"]


class BrokerError(RuntimeError):
    """The test broker could not be started (missing binary, bad config, port taken)."""


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (Mosquitto does not support port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class ClientCert:
    cert_file: Path
    key_file: Path


class _Pki:
    """A throw-away CA that signs a server certificate and client certificates."""

    def __init__(
        self,
        directory: Path,
        *,
        server_hosts: Sequence[str] = ("localhost", "127.0.0.1"),
        server_expired: bool = False,
        ca_name: str = "SafeEdge test CA",
    ) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name)])
        now = dt.datetime.now(dt.UTC)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )
        self.ca_file = self.dir / "ca.pem"
        self.ca_file.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        self.server = self.issue("server", server=True, hosts=server_hosts, expired=server_expired)

    def issue(
        self,
        cn: str,
        *,
        server: bool = False,
        hosts: Sequence[str] = ("localhost", "127.0.0.1"),
        expired: bool = False,
    ) -> ClientCert:
        """A certificate signed by this CA (``expired``: its validity ended a day ago)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC) - (dt.timedelta(days=2) if expired else dt.timedelta())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        usage = (
            x509.ExtendedKeyUsageOID.SERVER_AUTH
            if server
            else (x509.ExtendedKeyUsageOID.CLIENT_AUTH)
        )
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if server:
            names: list[x509.GeneralName] = []
            for host in hosts:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    names.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        out = ClientCert(self.dir / f"{cn}.pem", self.dir / f"{cn}.key")
        out.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        out.key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        out.key_file.chmod(0o600)  # the agent refuses a private key readable by others
        return out

    def sign_csr(self, csr_pem: bytes, out: Path, *, days: float = 1.0) -> Path:
        """A client certificate for a CSR written by the code under test (its own key)."""
        csr = x509.load_pem_x509_csr(csr_pem)
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(self._cert.subject)
            .public_key(csr.public_key())  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        out.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return out


class Broker:
    """One Mosquitto process with its own directory, config and port (see module docstring)."""

    host = "127.0.0.1"

    def __init__(
        self,
        directory: Path,
        *,
        mode: Mode = "anonymous",
        users: Mapping[str, str] | None = None,
        acl: Sequence[str] | None = None,
        extra_config: Sequence[str] = (),
        server_hosts: Sequence[str] = ("localhost", "127.0.0.1"),
        server_expired: bool = False,
    ) -> None:
        """``server_hosts``/``server_expired`` shape the TLS server certificate (tls mode), to
        test how clients fail on a wrong host name or an expired certificate."""
        if not os.access(MOSQUITTO, os.X_OK):
            raise BrokerError(
                f"{MOSQUITTO} is missing: install Debian's mosquitto (`make test` does) to run "
                "the MQTT tests"
            )
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.mode = mode
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self.log_file = self.dir / "mosquitto.log"
        self.pki = (
            _Pki(self.dir / "pki", server_hosts=server_hosts, server_expired=server_expired)
            if mode == "tls"
            else None
        )
        lines = [
            f"listener {self.port} {self.host}",
            "persistence false",
            "user root",
            f"log_dest file {self.log_file}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
        ]
        if mode == "anonymous":
            lines.append("allow_anonymous true")
        elif mode == "password":
            if not users:
                raise BrokerError("password mode needs users={name: password}")
            lines += ["allow_anonymous false", f"password_file {self._write_passwords(users)}"]
        else:
            assert self.pki is not None
            lines += [
                "allow_anonymous false",
                f"cafile {self.pki.ca_file}",
                f"certfile {self.pki.server.cert_file}",
                f"keyfile {self.pki.server.key_file}",
                "require_certificate true",
                "use_identity_as_username true",
                "tls_version tlsv1.2",
            ]
        if acl is not None:
            acl_file = self.dir / "acl"
            acl_file.write_text("\n".join(acl) + "\n")
            lines.append(f"acl_file {acl_file}")
        lines += list(extra_config)
        self.conf_file = self.dir / "mosquitto.conf"
        self.conf_file.write_text("\n".join(lines) + "\n")

    def _write_passwords(self, users: Mapping[str, str]) -> Path:
        tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
        if not os.access(tool, os.X_OK):
            raise BrokerError("mosquitto_passwd is missing (Debian package mosquitto)")
        path = self.dir / "passwd"
        for i, (user, password) in enumerate(users.items()):
            flags = ["-b", "-c"] if i == 0 else ["-b"]
            subprocess.run([tool, *flags, str(path), user, password], check=True, timeout=10)
        return path

    @property
    def ca_file(self) -> Path:
        assert self.pki is not None, "only a tls broker has a CA"
        return self.pki.ca_file

    def sign_csr(self, csr_pem: bytes, out: Path, *, days: float = 1.0) -> Path:
        """Sign a CSR with this broker's CA (the gateway's own key, as in the field)."""
        assert self.pki is not None, "only a tls broker signs certificates"
        return self.pki.sign_csr(csr_pem, out, days=days)

    def client_cert(self, cn: str, *, expired: bool = False) -> ClientCert:
        """A client certificate signed by this broker's CA; ``cn`` becomes the ACL user name."""
        assert self.pki is not None, "only a tls broker issues client certificates"
        return self.pki.issue(cn, expired=expired)

    @staticmethod
    def foreign_pki(directory: Path) -> _Pki:
        """Another CA (``.ca_file``, ``.issue(cn)``): what this broker does not trust."""
        return _Pki(directory, ca_name="Another CA")

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def start(self, timeout_s: float = 5.0) -> None:
        """Start (or restart) on ``self.port``; returns when the port accepts connections."""
        if self.running:
            return
        self._proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf_file)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise BrokerError(
                    f"mosquitto exited with {self._proc.returncode} on port {self.port}: "
                    f"{err.strip()} {self.log()[-2000:]}"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), timeout=0.2),
            ):
                return
            time.sleep(0.02)
        self.kill()
        raise BrokerError(f"mosquitto did not accept connections on port {self.port} in time")

    def _end(self, sig: signal.Signals) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            if sig != signal.SIGKILL:
                proc.send_signal(signal.SIGCONT)  # a paused broker must see its SIGTERM
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if proc.stderr:
            proc.stderr.close()

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open, nothing is answered."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Graceful stop (SIGTERM): clients see the connection close."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """Abrupt stop (SIGKILL)."""
        self._end(signal.SIGKILL)

    def __enter__(self) -> Broker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool


class Subscriber:
    """A plain paho MQTT 5 client that records what it receives (the test's eyes on the broker).

    ``connect_kwargs`` go to ``username_pw_set`` / ``tls_set`` (keys ``username``, ``password``,
    ``ca_certs``, ``certfile``, ``keyfile``).
    """

    def __init__(self, broker: Broker, topic: str = "#", **connect_kwargs: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

        self._cond = threading.Condition()
        self.messages: list[Received] = []
        self._subscribed = threading.Event()
        c = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        if "username" in connect_kwargs:
            c.username_pw_set(connect_kwargs["username"], connect_kwargs.get("password"))
        if "ca_certs" in connect_kwargs:
            c.tls_set(
                ca_certs=connect_kwargs["ca_certs"],
                certfile=connect_kwargs.get("certfile"),
                keyfile=connect_kwargs.get("keyfile"),
            )

        def on_message(client: object, userdata: object, msg: mqtt.MQTTMessage) -> None:
            with self._cond:
                self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain)))
                self._cond.notify_all()

        c.on_message = on_message
        c.on_subscribe = lambda *a: self._subscribed.set()
        c.on_connect = lambda client, *a: client.subscribe(topic, qos=1)
        self._client = c
        c.connect(broker.host, broker.port, keepalive=10)
        c.loop_start()
        if not self._subscribed.wait(5):
            self.close()
            raise BrokerError(f"test subscriber could not subscribe to {topic!r}")

    def wait_for(self, predicate: Callable[[Received], bool], timeout_s: float = 5.0) -> Received:
        """The first message (already received or arriving within the timeout) matching."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for m in self.messages:
                    if predicate(m):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(m.topic, m.payload[:80]) for m in self.messages[-10:]]
                    raise AssertionError(f"no matching message within {timeout_s} s; last: {seen}")
                self._cond.wait(left)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
