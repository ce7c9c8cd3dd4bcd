"""The uplink's TLS context: TLS 1.2 or later, the configured CA, an optional client certificate.

A TLS failure at run time is a failed connection attempt, retried with TLS: there is no code
path that connects without it once ``uplink.tls`` is set.
"""

from __future__ import annotations

import ssl

from agent.config import TlsConfig
from agent.uplink.session import UplinkConfigError

__all__ = ["tls_context"]


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
