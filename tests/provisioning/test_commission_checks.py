"""Single commissioning checks on their own: clock, certificate expiry, capacity, key modes,
the ACL on MQTT 3.1.1, and that a scan never writes."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from agent.config import loads_config, resolved_paths
from provisioning.commission import (
    Options,
    capacity_check,
    key_permission_check,
    service_user,
)
from provisioning.commission_net import broker_checks, cert_check, clock_check
from provisioning.identity import CSR_FILE, create_identity
from tests.conftest import BrokerFactory
from tests.provisioning.pki import TestCa
from tests.provisioning.sntp_peer import sntp_server
from tests.provisioning.test_commission import ACL, gateway_files, write_config

GATEWAY = '[gateway]\nsite = "S1"\nid = "G1"\ndata_dir = "data"\n'


def test_a_clock_5_s_off_warns_and_an_unreachable_ntp_server_says_not_verified() -> None:
    with sntp_server(5.0) as port:
        off = clock_check(Options(ntp_servers=(f"127.0.0.1:{port}",)))
    assert off.status == "WARN" and "+5.0" in off.evidence
    with sntp_server(-0.5) as port:
        ok = clock_check(Options(ntp_servers=("127.0.0.1:9", f"127.0.0.1:{port}")))
    assert ok.status == "PASS" and "-0.5" in ok.evidence  # the first server did not answer


def test_a_certificate_with_ten_days_left_warns_and_an_expired_one_fails(tmp_path: Path) -> None:
    ca = TestCa()
    create_identity(tmp_path, site="S1", gateway="G1")
    csr = (tmp_path / CSR_FILE).read_bytes()
    text = GATEWAY + '[uplink.tls]\nca_file = "ca.pem"\ncert_file = "c.pem"\nkey_file = "k"\n'
    paths = resolved_paths(loads_config(text), tmp_path / "agent.toml")
    assert paths.cert_file is not None
    ca.sign(csr, paths.cert_file, days=10)
    assert cert_check(paths, Options()).status == "WARN"
    ca.sign(csr, paths.cert_file, start_days=-20, days=10)
    assert cert_check(paths, Options()).status == "FAIL"
    ca.sign(csr, paths.cert_file, days=400)
    assert cert_check(paths, Options()).status == "PASS"


def test_retention_that_does_not_fit_the_capacity_fails_with_the_capacity_needed(
    tmp_path: Path,
) -> None:
    tags = "".join(f'  [[devices.tags]]\n  name = "T{i}"\n  address = {i}\n' for i in range(50))
    device = ('[[devices]]\ndriver = "modbus_tcp"\nname = "plc"\nhost = "127.0.0.1"\n'
              "poll_interval_s = 0.5\ntimeout_s = 0.5\n" + tags)  # fmt: skip
    small = loads_config(GATEWAY + "[buffer]\ncapacity_mb = 64\n" + device)
    check = capacity_check(small, resolved_paths(small, tmp_path / "agent.toml"))
    assert check.status == "FAIL" and "capacity_mb to" in check.fix
    big = loads_config(GATEWAY + "[buffer]\ncapacity_mb = 20000\n" + device)
    check = capacity_check(big, resolved_paths(big, tmp_path / "agent.toml"))
    assert check.status in ("PASS", "WARN")  # WARN only if this disk is smaller than 20 GB


def test_a_tls_key_readable_by_others_fails(tmp_path: Path) -> None:
    text = GATEWAY + '[uplink.tls]\nca_file = "ca"\ncert_file = "c"\nkey_file = "k.pem"\n'
    paths = resolved_paths(loads_config(text), tmp_path / "agent.toml")
    assert paths.tls_key_file is not None
    paths.tls_key_file.write_text("key")
    os.chmod(paths.tls_key_file, 0o644)
    check = key_permission_check(paths)
    assert check.status == "FAIL" and "0644" in check.evidence
    os.chmod(paths.tls_key_file, 0o600)
    assert key_permission_check(paths).status == "PASS"
    me = pwd.getpwuid(os.getuid()).pw_name
    assert key_permission_check(paths, me).status == "PASS"
    other = next(p.pw_name for p in pwd.getpwall() if p.pw_uid != os.getuid())
    owned = key_permission_check(paths, other)  # the service user could not read it
    assert owned.status == "FAIL" and f"not owned by {other}" in owned.evidence
    assert key_permission_check(paths, "no-such-user-here").status == "PASS"


def test_the_service_user_comes_from_the_unit_file(tmp_path: Path) -> None:
    from tests.provisioning.test_commission import UNIT

    assert service_user(UNIT) == "safeedge"
    assert service_user(tmp_path / "none.service") is None


def test_on_mqtt_3_1_1_the_acl_cannot_be_judged_and_says_so(
    tmp_path: Path, make_broker: BrokerFactory
) -> None:
    broker = make_broker(mode="tls", acl=ACL)
    gateway_files(tmp_path, broker)
    config = write_config(tmp_path, mqtt_port=broker.port, modbus_port=1, protocol="mqtt311")
    from agent.config import load_config

    cfg = load_config(config)
    checks = {c.id: c for c in broker_checks(cfg, resolved_paths(cfg, config))}
    assert checks["broker.tls"].status == "PASS"
    assert checks["broker.acl"].status == "WARN" and "3.1.1" in checks["broker.acl"].evidence


def test_the_commissioned_event_is_not_queued_while_the_agent_holds_its_buffer(
    tmp_path: Path,
) -> None:
    import pytest

    from agent.config import load_config
    from buffer import BufferInUseError, Store
    from provisioning.commission_report import build_report, queue_event

    config = tmp_path / "agent.toml"
    config.write_text(GATEWAY)
    cfg = load_config(config)
    paths = resolved_paths(cfg, config)
    doc = build_report(checks=[], cfg=cfg, config_path=config, installer="x", now_ms=1)
    with (
        Store.open(path=paths.buffer_path, key_file=paths.buffer_key_file, gateway_id="G1"),
        pytest.raises(BufferInUseError),
    ):
        queue_event(cfg, paths, doc, "0" * 64)
    assert queue_event(cfg, paths, doc, "0" * 64) == 1  # the first event of this buffer
