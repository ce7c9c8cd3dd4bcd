"""The agent names why a TLS connection failed (and the CONNACK reason code), rate-limited.

Against a real Mosquitto in TLS mode with certificates made here: an expired broker
certificate, a broker certificate from a CA the gateway does not trust, a broker certificate
for another host name, a gateway certificate from a CA the broker does not trust, an expired
gateway certificate. The last two fail only after the handshake with TLS 1.3 (the broker's
alert arrives on the first read): they used to give no agent log line at all.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from agent.config import TlsConfig, UplinkConfig
from tests.conftest import BrokerFactory
from tests.support.loop_thread import ThreadedUplink
from tests.support.mosquitto import Broker

pytestmark = pytest.mark.integration


def _failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "uplink_connect_failed" in r.getMessage()]


def _run_until_named(
    broker: Broker, tls: TlsConfig, caplog: pytest.LogCaptureFixture, attempts_wanted: int = 3
) -> tuple[list[str], int]:
    """Runs the uplink until it has made ``attempts_wanted`` connection attempts (bounded at
    20 s: a loaded machine slows the handshakes, it must not make the test flaky)."""
    cfg = UplinkConfig(
        host=broker.host, port=broker.port, tls=tls, reconnect_min_s=0.05, reconnect_max_s=0.1
    )
    up = ThreadedUplink(config=cfg, site="S1", gateway="G1", agent_version="9.9.9")
    try:
        with caplog.at_level(logging.INFO, logger="agent.uplink"):
            up.start()
            deadline = time.monotonic() + 20
            while up.stats().connects < attempts_wanted and time.monotonic() < deadline:
                time.sleep(0.02)
        attempts = up.stats().connects
        assert up.stats().sessions == 0
    finally:
        up.close()
    return [r.getMessage() for r in _failures(caplog)], attempts


def _tls(ca: Path, cert: Path, key: Path) -> TlsConfig:
    return TlsConfig(ca_file=str(ca), cert_file=str(cert), key_file=str(key))


@pytest.mark.parametrize(
    ("case", "name"),
    [
        ("server_expired", "server_certificate_expired"),
        ("unknown_ca", "unknown_ca"),
        ("hostname", "hostname_mismatch"),
        ("client_foreign_ca", "client_certificate_refused"),
        ("client_expired", "client_certificate_expired"),
    ],
)
def test_each_tls_failure_is_named_once_per_interval(
    case: str,
    name: str,
    make_broker: BrokerFactory,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    options: dict[str, object] = {}
    if case == "server_expired":
        options["server_expired"] = True
    if case == "hostname":
        options["server_hosts"] = ("broker.other.example",)
    broker = make_broker(mode="tls", **options)
    cert = broker.client_cert("G1", expired=case == "client_expired")
    ca = broker.ca_file
    if case == "unknown_ca":
        ca = Broker.foreign_pki(tmp_path / "other").ca_file
    if case == "client_foreign_ca":
        cert = Broker.foreign_pki(tmp_path / "other").issue("G1")
    lines, attempts = _run_until_named(broker, _tls(ca, cert.cert_file, cert.key_file), caplog)
    assert attempts >= 3
    assert len(lines) == 1, lines  # rate-limited: one line per cause per minute
    assert f"tls_error={name} " in lines[0]
    assert "remedy=" in lines[0] and "error=" in lines[0]


def test_a_refused_connack_logs_its_reason_code(
    make_broker: BrokerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    broker = make_broker(mode="password", users={"gw": "right"})
    cfg = UplinkConfig(
        host=broker.host,
        port=broker.port,
        username="gw",
        reconnect_min_s=0.05,
        reconnect_max_s=0.1,
    )
    up = ThreadedUplink(config=cfg, site="S1", gateway="G1", agent_version="9.9.9", password="x")
    try:
        with caplog.at_level(logging.INFO, logger="agent.uplink"):
            up.start()
            deadline = time.monotonic() + 5
            while up.stats().refused < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
    finally:
        up.close()
    refused = [r.getMessage() for r in caplog.records if "uplink_refused" in r.getMessage()]
    assert len(refused) == 1, refused
    assert "code=0x87" in refused[0] and "Not authorized" in refused[0]  # Mosquitto 2.0, MQTT 5


def test_a_bare_tls_eof_after_a_named_refusal_counts_as_that_refusal() -> None:
    # With TLS 1.3 the broker's alert for a refused client certificate can be lost when it
    # closes the socket: the next attempt then reads a bare EOF. It is the same cause (one
    # log line per interval), not an unnamed new one; with no cause named before, it stays
    # unnamed, and a named cause always wins.
    from agent.uplink.tls import tls_failure_after

    alert = "failed to receive on socket: [SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca"
    eof = "failed to receive on socket: EOF occurred in violation of protocol (_ssl.c:2427)"
    refused = tls_failure_after(alert, None)
    assert refused is not None and refused[0] == "client_certificate_refused"
    assert tls_failure_after(eof, refused) == refused
    assert tls_failure_after(eof, None) is None
    assert tls_failure_after("[SSL: WRONG_VERSION_NUMBER] wrong version", refused) == (
        "not_tls", "uplink.port is not a TLS listener",
    )  # fmt: skip
    assert tls_failure_after("connection refused", refused) is None
