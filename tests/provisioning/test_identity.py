"""``safeedge identity``: key and CSR, and every install check against real certificates."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.cli import main
from provisioning.identity import CA_FILE, CERT_FILE, CSR_FILE, KEY_FILE
from tests.provisioning.pki import TestCa


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, object]]:
    code = main(["identity", *args, "--json"])
    return code, json.loads(capsys.readouterr().out)


@pytest.fixture
def ident(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    d = tmp_path / "id"
    code, doc = run(capsys, "create", "--dir", str(d), "--site", "S1", "--gateway", "G1")
    assert code == 0, doc
    return d


def test_create_writes_a_p256_key_only_its_owner_reads_and_a_csr_naming_site_and_gateway(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "id"
    code, doc = run(capsys, "create", "--dir", str(d), "--site", "S1", "--gateway", "G1")
    assert code == 0
    assert stat.S_IMODE((d / KEY_FILE).stat().st_mode) == 0o600
    csr = x509.load_pem_x509_csr((d / CSR_FILE).read_bytes())
    assert csr.is_signature_valid
    assert isinstance(csr.public_key(), ec.EllipticCurvePublicKey)
    assert csr.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    subject = {a.oid: a.value for a in csr.subject}
    assert subject[NameOID.COMMON_NAME] == "G1"
    assert subject[NameOID.ORGANIZATIONAL_UNIT_NAME] == "S1"
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "urn:safeedge:S1:G1" in san.get_values_for_type(x509.UniformResourceIdentifier)
    fp = str(doc["key_fingerprint"])
    assert len(fp.split(":")) == 32


def test_create_never_replaces_an_existing_key(
    ident: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (ident / KEY_FILE).read_bytes()
    code, doc = run(capsys, "create", "--dir", str(ident), "--site", "S1", "--gateway", "G1")
    assert code == 1 and doc["check"] == "key_exists"
    assert (ident / KEY_FILE).read_bytes() == before


def test_install_accepts_a_valid_certificate_and_show_rechecks_it(
    ident: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = TestCa()
    cert = ca.sign((ident / CSR_FILE).read_bytes(), tmp_path / "signed.pem", days=90)
    args = ["--cert", str(cert), "--ca", str(ca.write(tmp_path / "ca.pem"))]
    code, doc = run(
        capsys, "install", "--dir", str(ident), "--site", "S1", "--gateway", "G1", *args
    )
    assert code == 0, doc
    assert (ident / CERT_FILE).read_bytes() == cert.read_bytes()
    assert (ident / CA_FILE).exists()
    assert 88 < float(doc["days_left"]) <= 90  # type: ignore[arg-type]
    code, shown = run(capsys, "show", "--dir", str(ident))
    assert code == 0 and shown["fingerprint"] == doc["fingerprint"]


@pytest.mark.parametrize(
    ("case", "check"),
    [
        ("expired", "expired"),
        ("not_yet_valid", "not_yet_valid"),
        ("wrong_key", "key_mismatch"),
        ("wrong_ca", "wrong_ca"),
        ("ca_not_ca", "ca_not_ca"),
        ("wrong_gateway", "wrong_gateway"),
    ],
)
def test_install_refuses_each_mismatch_with_its_own_error_and_installs_nothing(
    ident: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, check: str
) -> None:
    ca, other = TestCa(), TestCa("Another CA")
    csr = (ident / CSR_FILE).read_bytes()
    out = tmp_path / "signed.pem"
    ca_file = ca.write(tmp_path / "ca.pem")
    if case == "expired":
        ca.sign(csr, out, start_days=-30, days=10)
    elif case == "not_yet_valid":
        ca.sign(csr, out, start_days=5, days=10)
    elif case == "wrong_key":
        ca.sign(csr, out, public_key=ec.generate_private_key(ec.SECP256R1()).public_key())
    elif case == "wrong_ca":
        other.sign(csr, out)
    elif case == "ca_not_ca":
        leaf = TestCa("not a CA", ca=False)
        leaf.sign(csr, out)
        ca_file = leaf.write(tmp_path / "leaf.pem")
    else:
        ca.sign(csr, out, cn="G2")
    args = ["--cert", str(out), "--ca", str(ca_file), "--site", "S1", "--gateway", "G1"]
    code, doc = run(capsys, "install", "--dir", str(ident), *args)
    assert code == 1
    assert doc["check"] == check, doc
    assert doc["hint"]
    assert not (ident / CERT_FILE).exists()


def test_install_without_a_key_says_to_create_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = TestCa()
    ca_file = ca.write(tmp_path / "ca.pem")
    code, doc = run(capsys, "install", "--dir", str(tmp_path), "--cert", str(ca_file), "--ca",
                    str(ca_file))  # fmt: skip
    assert code == 1 and doc["check"] == "key" and "identity create" in str(doc["hint"])


def test_create_gives_the_key_to_the_agents_user_and_names_an_unknown_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import os
    import pwd

    me = pwd.getpwuid(os.getuid()).pw_name
    args = ["create", "--site", "S1", "--gateway", "G1", "--owner"]
    code, doc = run(capsys, *args, me, "--dir", str(tmp_path / "a"))
    assert code == 0 and (tmp_path / "a" / KEY_FILE).stat().st_uid == os.getuid()
    code, doc = run(capsys, *args, "no-such-user-here", "--dir", str(tmp_path / "b"))
    assert code == 1 and doc["check"] == "owner"
    assert not (tmp_path / "b" / KEY_FILE).exists()
