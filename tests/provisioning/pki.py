"""A throw-away certificate authority for the installer-kit tests: signs CSRs the code under
test wrote, with any validity window, so valid, expired, wrong-key and wrong-CA certificates
are real X.509 files made here (nothing is mocked)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


class TestCa:
    __test__ = False  # not a test class, despite the name

    def __init__(self, name: str = "Platform test CA", *, ca: bool = True) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    def write(self, path: Path) -> Path:
        path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        return path

    def sign(
        self,
        csr_pem: bytes,
        out: Path,
        *,
        days: float = 365.0,
        start_days: float = -1.0,
        public_key: ec.EllipticCurvePublicKey | None = None,
        cn: str | None = None,
    ) -> Path:
        """Sign the CSR (or ``public_key`` instead of the CSR's: a wrong-key certificate)."""
        csr = x509.load_pem_x509_csr(csr_pem)
        now = dt.datetime.now(dt.UTC)
        subject = csr.subject
        if cn is not None:
            subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        key = public_key or csr.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + dt.timedelta(days=start_days))
            .not_valid_after(now + dt.timedelta(days=start_days + days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        out.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return out
