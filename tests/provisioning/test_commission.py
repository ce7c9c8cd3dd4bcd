"""``safeedge commission``: the go/no-go report against a real Mosquitto with TLS client
certificates and an ACL, a real pymodbus device, an SNTP peer, and the repository's unit file."""

from __future__ import annotations

import json
import os
from html.parser import HTMLParser
from pathlib import Path

import jsonschema
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from agent.cli import main
from buffer import StoreReader, Stream
from provisioning.commission import CHECK_IDS
from provisioning.commission_report import verify_signature
from provisioning.identity import create_identity
from tests.conftest import BrokerFactory
from tests.drivers.peers import free_port, sim_device
from tests.provisioning.background import in_background, tcp_peer
from tests.provisioning.sntp_peer import sntp_server

REPO = Path(__file__).parents[2]
UNIT = REPO / "systemd" / "safeedge.service"
CACHE = Path(os.environ.get("NUMBA_CACHE_DIR", REPO / ".cache" / "numba"))
ACL = ["pattern readwrite safeedge/v1/+/%u/#"]


def gateway_files(tmp_path: Path, broker: object) -> Path:
    """The gateway's identity as `safeedge identity create` makes it, signed by the broker's CA."""
    ident = tmp_path / "identity"
    create_identity(ident, site="S1", gateway="G1")
    broker.sign_csr((ident / "gateway.csr").read_bytes(), ident / "gateway.crt", days=365)  # type: ignore[attr-defined]
    (ident / "ca.crt").write_bytes(broker.ca_file.read_bytes())  # type: ignore[attr-defined]
    return ident


def write_config(tmp_path: Path, *, mqtt_port: int, modbus_port: int, high: float = 25.0,
                 h2s_unit: str = "mg/m³", protocol: str = "mqtt5") -> Path:  # fmt: skip
    text = f"""
[gateway]
site = "S1"
id = "G1"
data_dir = "data"

[uplink]
host = "127.0.0.1"
port = {mqtt_port}
protocol = "{protocol}"
[uplink.tls]
ca_file = "identity/ca.crt"
cert_file = "identity/gateway.crt"
key_file = "identity/gateway.key"

[[devices]]
driver = "modbus_tcp"
name = "plc"
host = "127.0.0.1"
port = {modbus_port}
  [[devices.tags]]
  name = "GT-101"
  address = 34
  scale = 0.1
  offset = -10.0
  unit = "%LEL"
  [[devices.tags]]
  name = "H2S-1"
  address = 0
  scale = 0.001
  unit = "{h2s_unit}"

[[rules]]
match = "GT-*"
template = "combustible-gas-lel"
high = {high}
[[rules]]
tags = ["H2S-1"]
template = "toxic-h2s"
"""
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


class Checks(HTMLParser):
    """The report page's structure: every check row, the verdict, embedded JSON."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, str] = {}
        self.result = ""
        self._in_data = False
        self.data = ""
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "tr" and "check" in (a.get("class") or "").split():
            self.rows[str(a["data-check-id"])] = str(a["data-status"])
        if a.get("id") == "result":
            self.result = str(a["data-result"])
        if tag == "script" and a.get("id") == "report-data":
            self._in_data = True
        if tag in ("link", "img", "script") and (a.get("src") or a.get("href")):
            self.external.append(tag)

    def handle_endtag(self, tag: str) -> None:
        self._in_data = False if tag == "script" else self._in_data

    def handle_data(self, data: str) -> None:
        if self._in_data:
            self.data += data


def commission(capsys: pytest.CaptureFixture[str], config: Path, out: Path,
               *extra: str) -> tuple[int, dict]:  # fmt: skip
    code = main(["commission", "--config", str(config), "--out", str(out), "--installer",
                 "王工", "--unit-file", str(UNIT), "--numba-cache", str(CACHE), "--json",
                 *extra])  # fmt: skip
    return code, json.loads(capsys.readouterr().out)


def statuses(doc: dict) -> dict[str, str]:
    return {c["id"]: c["status"] for c in doc["report"]["checks"]}


def test_a_good_gateway_is_go_with_every_check_signed_and_queued_upstream(
    tmp_path: Path, make_broker: BrokerFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    broker = make_broker(mode="tls", acl=ACL)
    ident = gateway_files(tmp_path, broker)
    modbus = free_port()
    config = write_config(tmp_path, mqtt_port=broker.port, modbus_port=modbus)
    with in_background(lambda: tcp_peer(modbus, sim_device())), sntp_server(0.3) as ntp:
        code, doc = commission(capsys, config, tmp_path / "out", "--ntp", f"127.0.0.1:{ntp}",
                               "--sign", "--send")  # fmt: skip
    st = statuses(doc)
    assert list(st) == list(CHECK_IDS)
    assert set(st.values()) == {"PASS"}, doc["report"]["checks"]  # the shipped unit included
    assert code == 0 and doc["report"]["result"] == "go"
    report = doc["report"]
    assert (report["site"], report["gateway"], report["installer"]) == ("S1", "G1", "王工")
    assert report["config_hash"] and len(report["config_sha256"]) == 64
    evidence = {c["id"]: c["evidence"] for c in report["checks"]}
    assert "+0.3" in evidence["clock.offset"]
    assert "0x87" in evidence["broker.acl"]
    # the files: JSON bytes signed by the gateway key, HTML with every check
    json_file, html_file = (Path(f) for f in doc["files"])
    data = json_file.read_bytes()
    sig = json.loads(json_file.with_suffix(".sig.json").read_text())
    cert = x509.load_pem_x509_certificate((ident / "gateway.crt").read_bytes())
    public = cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert verify_signature(data, sig, public)
    assert not verify_signature(data.replace(b"go", b"no"), sig, public)
    page = Checks()
    page.feed(html_file.read_text(encoding="utf-8"))
    assert list(page.rows) == list(CHECK_IDS) and page.result == "go" and not page.external
    assert json.loads(page.data) == json.loads(data)
    # the commissioned event waits in the gateway's own buffer, with the report's digest
    data_dir = tmp_path / "data"
    reader = StoreReader.open(
        path=data_dir / "buffer.db", key_file=data_dir / "buffer.key", gateway_id="G1"
    )
    try:
        [rec] = list(reader.records(stream=Stream.EVENT))
    finally:
        reader.close()
    assert rec.payload is not None
    body = json.loads(rec.payload)
    assert body["kind"] == "commissioned" and body["result"] == "go"
    assert body["digest"] == doc["digest"]
    schema = json.loads((REPO / "agent" / "schemas" / "event.json").read_text())
    jsonschema.validate(body, schema)


def test_an_unsafe_setpoint_a_dead_device_and_a_missing_unit_make_it_no_go(
    tmp_path: Path, make_broker: BrokerFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    broker = make_broker(mode="tls", acl=["pattern readwrite safeedge/v1/#"])  # too wide
    gateway_files(tmp_path, broker)
    config = write_config(tmp_path, mqtt_port=broker.port, modbus_port=free_port(), high=30,
                          h2s_unit="ppm")  # fmt: skip
    code = main(["commission", "--config", str(config), "--out", str(tmp_path / "out"),
                 "--unit-file", str(tmp_path / "none.service"), "--numba-cache", str(CACHE),
                 "--skip", "rules.kernels", "--json"])  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    st = statuses(doc)
    assert code == 1 and doc["report"]["result"] == "no-go"
    assert st["setpoints.ceilings"] == "FAIL" and st["setpoints.units"] == "WARN"
    assert st["devices.answer"] == "FAIL" and st["tags.good"] == "FAIL"
    assert st["broker.tls"] == "PASS" and st["broker.publish_own"] == "PASS"
    assert st["broker.acl"] == "FAIL"  # another gateway's topic was accepted
    assert st["systemd.unit"] == "FAIL" and st["clock.offset"] == "WARN"
    fails = {c["id"]: c for c in doc["report"]["checks"] if c["status"] == "FAIL"}
    assert "GB/T 50493-2019" in fails["setpoints.ceilings"]["fix"]
    page = Checks()
    page.feed(Path(doc["files"][1]).read_text(encoding="utf-8"))
    assert page.result == "no-go" and page.rows["setpoints.ceilings"] == "FAIL"
    assert list(page.rows) == list(CHECK_IDS)


def test_a_certificate_from_another_ca_fails_tls_and_an_invalid_config_fails_everything(
    tmp_path: Path, make_broker: BrokerFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.provisioning.pki import TestCa

    broker = make_broker(mode="tls", acl=ACL)
    ident = gateway_files(tmp_path, broker)
    TestCa("Rogue CA").sign((ident / "gateway.csr").read_bytes(), ident / "gateway.crt")
    config = write_config(tmp_path, mqtt_port=broker.port, modbus_port=free_port())
    fast = ("--skip", "devices.answer,rules.kernels")  # shown elsewhere; each costs seconds
    code, doc = commission(capsys, config, tmp_path / "out", *fast)
    st = statuses(doc)
    assert code == 1 and st["broker.tls"] == "FAIL"
    assert st["broker.publish_own"] == "FAIL" and st["broker.acl"] == "FAIL"
    (ident / "ca.crt").unlink()  # the agent would refuse to start: config.valid fails
    code, doc = commission(capsys, config, tmp_path / "out1", *fast)
    valid = next(c for c in doc["report"]["checks"] if c["id"] == "config.valid")
    assert code == 1 and valid["status"] == "FAIL" and "uplink.tls.ca_file" in valid["evidence"]
    bad = tmp_path / "bad.toml"
    bad.write_text('[gateway]\nsite = "S1"\n')
    code, doc = commission(capsys, bad, tmp_path / "out2")
    st = statuses(doc)
    assert code == 1 and st["config.valid"] == "FAIL"
    assert list(st) == list(CHECK_IDS)
    assert all(v == "FAIL" for k, v in st.items() if k not in ("config.valid", "systemd.unit"))


def test_the_unit_check_scores_with_systemd_analyze_and_warns_on_an_exposed_unit(
    tmp_path: Path,
) -> None:
    from provisioning.commission import systemd_check

    bare = tmp_path / "bare.service"
    bare.write_text("[Service]\nExecStart=/bin/true\n")
    warn = systemd_check(bare, 7.0)
    assert warn.status == "WARN" and "exposure" in warn.evidence
    shipped = systemd_check(UNIT, 7.0)
    assert shipped.status == "PASS", shipped.evidence


def test_the_installer_commands_load_without_numba() -> None:
    """`safeedge run` picks NUMBA_CACHE_DIR before numba loads; the CLI imports every command."""
    import subprocess
    import sys

    code = "import sys, agent.cli; agent.cli.build_parser(); print('numba' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=REPO)  # fmt: skip
    assert done.stdout.strip() == "False", done.stderr
