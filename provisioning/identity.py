"""The gateway's own identity: its private key, the CSR for the platform's CA, the signed
certificate and the platform CA it trusts.

Files in the identity directory (default ``/etc/safeedge/identity``)::

    gateway.key   ECDSA private key (P-256 by default), PKCS#8 PEM, mode 0600, never overwritten
    gateway.csr   the certificate signing request to hand to the platform
    gateway.crt   the signed certificate, installed only after every check below passed
    ca.crt        the platform CA that signed it (also the broker's CA unless configured apart)

Subject of the CSR: ``CN=<gateway>, OU=<site>, O=SafeEdge``; SAN: the URI
``urn:safeedge:<site>:<gateway>`` and the DNS-safe name ``<gateway>.<site>.safeedge`` when both
ids are DNS labels. A broker with ``use_identity_as_username`` sees the CN (the gateway id) as
the ACL user, so ``pattern readwrite safeedge/v1/+/%u/#`` confines a gateway to its own topics.

Installing checks, each with its own error: the certificate's public key is the gateway key's;
now lies in its validity window; the CA is a CA and verifies the certificate's signature (and
the issuer name matches); the certificate names this site and gateway. Fingerprints are SHA-256
over the DER of the public key (what the installer reads out over the phone) or the certificate.
"""

from __future__ import annotations

import datetime as dt
import os
import pwd
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = [
    "CA_FILE",
    "CERT_FILE",
    "CSR_FILE",
    "KEY_FILE",
    "CertInfo",
    "IdentityError",
    "cert_info",
    "create_identity",
    "fingerprint",
    "install_certificate",
    "installed",
    "load_key",
    "verify_certificate",
]

KEY_FILE, CSR_FILE, CERT_FILE, CA_FILE = "gateway.key", "gateway.csr", "gateway.crt", "ca.crt"
_CURVES: dict[str, ec.EllipticCurve] = {"p256": ec.SECP256R1(), "p384": ec.SECP384R1()}
_DNS_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


class IdentityError(Exception):
    """An identity file is missing, malformed or does not fit (needs a human).

    ``what`` names the check that failed (``key_mismatch``, ``expired``...); ``hint`` the fix.
    """

    def __init__(self, what: str, message: str, hint: str) -> None:
        super().__init__(message)
        self.what = what
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})"


@dataclass(frozen=True, slots=True)
class CertInfo:
    """What an installer needs to see of a certificate."""

    subject: str
    issuer: str
    not_before_ms: int
    not_after_ms: int
    days_left: float
    fingerprint: str  # SHA-256 of the certificate DER
    key_fingerprint: str  # SHA-256 of the public key DER


def fingerprint(public_key: ec.EllipticCurvePublicKey) -> str:
    """``AB:CD:...`` SHA-256 of the SubjectPublicKeyInfo DER."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return _colons(_sha256(der))


def _sha256(data: bytes) -> bytes:
    h = hashes.Hash(hashes.SHA256())
    h.update(data)
    return h.finalize()


def _colons(digest: bytes) -> str:
    return ":".join(f"{b:02X}" for b in digest)


def create_identity(
    directory: Path, *, site: str, gateway: str, curve: str = "p256", owner: str | None = None
) -> tuple[Path, Path, str]:
    """Write ``gateway.key`` (0600, owned by ``owner`` when given: the agent's user must read
    it) and ``gateway.csr``; return their paths and the key's fingerprint. Refuses to replace
    an existing key (IdentityError ``key_exists``): a new key invalidates the certificate the
    platform issued for the old one."""
    if curve not in _CURVES:
        raise IdentityError("curve", f"unknown curve {curve!r}", f"use one of {sorted(_CURVES)}")
    ids = None
    if owner is not None:
        try:
            entry = pwd.getpwnam(owner)
        except KeyError as exc:
            raise IdentityError(
                "owner", f"no user {owner!r} on this machine", "install.sh creates safeedge"
            ) from exc
        ids = (entry.pw_uid, entry.pw_gid)
    directory.mkdir(parents=True, exist_ok=True)
    key_path, csr_path = directory / KEY_FILE, directory / CSR_FILE
    key = ec.generate_private_key(_CURVES[curve])
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise IdentityError(
            "key_exists",
            f"{key_path} already exists",
            "the gateway already has a key: use `safeedge identity show`, or move the old "
            "identity away first if you really mean to replace it",
        ) from exc
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.chmod(key_path, 0o600)  # the umask may have narrowed it, never widened: make it exact
    if ids is not None:
        os.chown(key_path, *ids)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_subject(site, gateway))
        .add_extension(x509.SubjectAlternativeName(_san(site, gateway)), critical=False)
        .sign(key, hashes.SHA256())
    )
    csr_path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    return key_path, csr_path, fingerprint(key.public_key())


def _subject(site: str, gateway: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, gateway),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, site),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SafeEdge"),
        ]
    )


def _san(site: str, gateway: str) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(f"urn:safeedge:{site}:{gateway}")
    ]
    if _DNS_LABEL.match(site) and _DNS_LABEL.match(gateway):
        names.append(x509.DNSName(f"{gateway}.{site}.safeedge".lower()))
    return names


def load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The gateway key; IdentityError ``key`` when missing, unreadable or not an EC key."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise IdentityError(
            "key", f"cannot read the gateway key {path}: {exc.strerror}", "run identity create"
        ) from exc
    except ValueError as exc:
        raise IdentityError("key", f"{path} is not a PEM private key", "check the file") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise IdentityError("key", f"{path} is not an ECDSA key", "run identity create")
    return key


def _load_cert(path: Path, role: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as exc:
        raise IdentityError(
            role, f"cannot read the {role} {path}: {exc.strerror}", "check the path"
        ) from exc
    except ValueError as exc:
        raise IdentityError(
            role, f"{path} is not a PEM certificate", "ask the platform for the PEM file"
        ) from exc


def verify_certificate(
    cert: x509.Certificate,
    *,
    key: ec.EllipticCurvePrivateKey,
    ca: x509.Certificate,
    site: str | None,
    gateway: str | None,
    now: dt.datetime,
) -> CertInfo:
    """Every install check, in order; the first failing one raises :class:`IdentityError`."""
    if fingerprint(key.public_key()) != _key_fp(cert):
        raise IdentityError(
            "key_mismatch",
            "the certificate does not belong to this gateway's key (its public key differs)",
            "the platform signed another CSR: send it gateway.csr from this gateway",
        )
    if now < cert.not_valid_before_utc:
        raise IdentityError(
            "not_yet_valid",
            f"the certificate is valid only from {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
            "check the gateway clock (timedatectl), or wait until then",
        )
    if now > cert.not_valid_after_utc:
        raise IdentityError(
            "expired",
            f"the certificate expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC",
            "ask the platform for a new certificate for gateway.csr",
        )
    constraints = _basic_constraints(ca)
    if constraints is None or not constraints.ca:
        raise IdentityError(
            "ca_not_ca", "the CA file is not a CA certificate", "use the platform's CA certificate"
        )
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise IdentityError(
            "wrong_ca",
            f"the CA {ca.subject.rfc4514_string()} did not sign this certificate "
            f"(issuer: {cert.issuer.rfc4514_string()})",
            "install the CA that issued the certificate (ask the platform for its chain)",
        ) from exc
    cn = _attr(cert.subject, NameOID.COMMON_NAME)
    ou = _attr(cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME)
    if gateway is not None and cn != gateway:
        raise IdentityError(
            "wrong_gateway",
            f"the certificate is for gateway {cn!r}, this gateway is {gateway!r}",
            "the platform signed another gateway's CSR: send it this gateway's gateway.csr",
        )
    if site is not None and ou not in (None, site):
        raise IdentityError(
            "wrong_site",
            f"the certificate is for site {ou!r}, this gateway is at site {site!r}",
            "check [gateway] site in the config, or ask for a certificate for this site",
        )
    return cert_info(cert, now=now)


def cert_info(cert: x509.Certificate, *, now: dt.datetime) -> CertInfo:
    after = cert.not_valid_after_utc
    return CertInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        not_before_ms=int(cert.not_valid_before_utc.timestamp() * 1000),
        not_after_ms=int(after.timestamp() * 1000),
        days_left=(after - now).total_seconds() / 86400.0,
        fingerprint=_colons(cert.fingerprint(hashes.SHA256())),
        key_fingerprint=_key_fp(cert),
    )


def _key_fp(cert: x509.Certificate) -> str:
    public = cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        return "not-an-ec-key"
    return fingerprint(public)


def _basic_constraints(cert: x509.Certificate) -> x509.BasicConstraints | None:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None


def _attr(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    attrs = name.get_attributes_for_oid(oid)
    return str(attrs[0].value) if attrs else None


def install_certificate(
    directory: Path,
    *,
    cert_file: Path,
    ca_file: Path,
    site: str | None = None,
    gateway: str | None = None,
    now: dt.datetime | None = None,
) -> CertInfo:
    """Check ``cert_file`` against the key in ``directory`` and ``ca_file``; only when every
    check passes copy both into ``directory`` (``gateway.crt``, ``ca.crt``, mode 0644)."""
    key = load_key(directory / KEY_FILE)
    cert = _load_cert(cert_file, "certificate")
    ca = _load_cert(ca_file, "CA certificate")
    info = verify_certificate(
        cert, key=key, ca=ca, site=site, gateway=gateway, now=now or dt.datetime.now(dt.UTC)
    )
    for src, name in ((cert, CERT_FILE), (ca, CA_FILE)):
        target = directory / name
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(src.public_bytes(serialization.Encoding.PEM))
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)  # never a half-written certificate in place
    return info


def installed(directory: Path, *, now: dt.datetime | None = None) -> CertInfo:
    """Re-run the checks on the installed files (``safeedge identity show``)."""
    key = load_key(directory / KEY_FILE)
    cert = _load_cert(directory / CERT_FILE, "certificate")
    ca = _load_cert(directory / CA_FILE, "CA certificate")
    return verify_certificate(
        cert, key=key, ca=ca, site=None, gateway=None, now=now or dt.datetime.now(dt.UTC)
    )
