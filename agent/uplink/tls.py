"""The uplink's TLS context: TLS 1.2 or later, the configured CA, an optional client certificate.

A TLS failure at run time is a failed connection attempt, retried with TLS: there is no code
path that connects without it once ``uplink.tls`` is set. :func:`tls_failure` names the cause
of a failure from OpenSSL's message (our verification of the broker, or the broker's alert
about our certificate, which with TLS 1.3 arrives only on the first read after the handshake).
"""

from __future__ import annotations

import ssl
from typing import Final

from agent.config import TlsConfig
from agent.uplink.session import UplinkConfigError

__all__ = [
    "TLS_FAILURES",
    "certificate_identity",
    "tls_context",
    "tls_failure",
    "tls_failure_after",
]

# (substring of OpenSSL's text, name, what a human should do); the first match wins.
TLS_FAILURES: Final = (
    ("certificate has expired", "server_certificate_expired", "renew the broker's certificate"),
    ("certificate is not yet valid", "server_certificate_not_yet_valid", "check the clock"),
    (
        "mismatch, certificate is not valid for",
        "hostname_mismatch",
        "uplink.host must be a name or address in the broker certificate's subjectAltName",
    ),
    (
        "unable to get local issuer certificate",
        "unknown_ca",
        "uplink.tls.ca_file must hold the CA that signed the broker's certificate",
    ),
    (
        "self-signed certificate",
        "unknown_ca",
        "uplink.tls.ca_file must hold the CA that signed the broker's certificate",
    ),
    (
        "certificate signature failure",
        "unknown_ca",
        "uplink.tls.ca_file must hold the CA that signed the broker's certificate",
    ),
    (
        "ALERT_CERTIFICATE_EXPIRED",
        "client_certificate_expired",
        "renew the gateway's certificate (uplink.tls.cert_file)",
    ),
    ("ALERT_CERTIFICATE_REVOKED", "client_certificate_revoked", "issue a new gateway certificate"),
    (
        "ALERT_UNKNOWN_CA",
        "client_certificate_refused",
        "the broker does not trust the CA of uplink.tls.cert_file",
    ),
    (
        "ALERT_DECRYPT_ERROR",
        "client_certificate_refused",
        "the broker does not trust uplink.tls.cert_file (signed by another CA?)",
    ),
    ("ALERT_BAD_CERTIFICATE", "client_certificate_refused", "check uplink.tls.cert_file"),
    ("ALERT_CERTIFICATE_UNKNOWN", "client_certificate_refused", "check uplink.tls.cert_file"),
    (
        "ALERT_CERTIFICATE_REQUIRED",
        "client_certificate_required",
        "the broker requires a client certificate: set uplink.tls.cert_file and key_file",
    ),
    ("ALERT_HANDSHAKE_FAILURE", "handshake_failure", "no common TLS version or cipher"),
    ("ALERT_PROTOCOL_VERSION", "protocol_version", "the broker does not offer TLS 1.2 or later"),
    ("WRONG_VERSION_NUMBER", "not_tls", "uplink.port is not a TLS listener"),
)


def tls_failure(text: str) -> tuple[str, str] | None:
    """``(name, remedy)`` for an OpenSSL error text, or None when it is no known TLS failure."""
    for needle, name, remedy in TLS_FAILURES:
        if needle in text:
            return name, remedy
    if "SSL" in text or "certificate" in text:
        return "tls_error", "see detail"
    return None


_BARE_EOF = "EOF occurred in violation of protocol"  # ssl.SSLEOFError: closed without an alert


def tls_failure_after(text: str, previous: tuple[str, str] | None) -> tuple[str, str] | None:
    """:func:`tls_failure`, except that a TLS session the broker closed without an alert (with
    TLS 1.3 the alert of a refused client certificate can be lost in the close) counts as the
    ``previous`` named cause of this run of failed attempts: one cause, one log line."""
    named = tls_failure(text)
    if named is None and _BARE_EOF in text:
        return previous
    return named


class _ClosingSSLSocket(ssl.SSLSocket):
    """paho 2.2 leaves the socket open when the TLS handshake fails; a gateway that retries
    forever must not leak one descriptor per attempt."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def tls_context(tls: TlsConfig) -> ssl.SSLContext:
    """The client context for ``tls``; :class:`UplinkConfigError` when a file cannot be used."""
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


def certificate_identity(cert_file: str) -> str | None:
    """The subject CN of the (first) certificate in ``cert_file``: the gateway's identity
    when the broker maps it to the username (``use_identity_as_username``). None when the
    file holds no certificate with a CN; :class:`UplinkConfigError` when it cannot be read."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        with open(cert_file, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
    except (OSError, ValueError) as exc:
        raise UplinkConfigError(
            f"uplink.tls.cert_file: cannot read the certificate: {exc}"
        ) from exc
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else None
    return value if isinstance(value, str) and value else None
