"""Uplink against a real Mosquitto: acks, state and will, outages, ACL, passwords, TLS."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from agent.codec import decode_state
from agent.config import TlsConfig, UplinkConfig
from agent.uplink import REASON_LOST, PublishResult, Uplink, UplinkConfigError, backoff_delay
from tests.conftest import BrokerFactory
from tests.support.loop_thread import ThreadedUplink
from tests.support.mosquitto import Broker, Received, Subscriber

ROOT = "safeedge/v1/S1/G1"


def config(broker: Broker, **overrides: Any) -> UplinkConfig:
    base: dict[str, Any] = {
        "host": broker.host,
        "port": broker.port,
        "keepalive_s": 5,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.4,
    }
    return UplinkConfig(**{**base, **overrides})


def wait_until(cond: Callable[[], bool], timeout_s: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout_s} s")
        time.sleep(0.01)


def collect(uplink: ThreadedUplink, n: int, timeout_s: float = 5.0) -> list[PublishResult]:
    out: list[PublishResult] = []

    def enough() -> bool:
        out.extend(uplink.take_results())
        return len(out) >= n

    wait_until(enough, timeout_s, f"{n} publish results")
    return out


def state_of(m: Received) -> dict[str, Any]:
    return msgspec.structs.asdict(decode_state(m.payload))


@pytest.fixture
def make_uplink() -> Iterator[Callable[..., ThreadedUplink]]:
    made: list[ThreadedUplink] = []

    def make(cfg: UplinkConfig, **kwargs: Any) -> ThreadedUplink:
        kwargs.setdefault("site", "S1")
        kwargs.setdefault("gateway", "G1")
        kwargs.setdefault("agent_version", "9.9.9")
        up = ThreadedUplink(config=cfg, **kwargs)  # the real Uplink on its own loop thread
        made.append(up)
        return up

    yield make
    for up in made:
        up.close()


def connected(up: ThreadedUplink) -> ThreadedUplink:
    up.start()
    wait_until(lambda: up.connected, what="uplink connected")
    return up


# -- pure ------------------------------------------------------------------------------------


def test_backoff_stays_between_min_and_a_window_that_doubles_up_to_max() -> None:
    rng = random.Random(7)
    for attempt in range(20):
        window = min(8.0, 0.5 * 2 ** (attempt + 1))
        delays = [backoff_delay(attempt, 0.5, 8.0, rng.uniform) for _ in range(200)]
        assert all(0.5 <= d <= window for d in delays)
        assert max(delays) > 0.5 + 0.6 * (window - 0.5)  # the whole window is used: jitter
    assert backoff_delay(3, 0.5, 8.0, lambda lo, hi: hi) == 8.0
    assert backoff_delay(0, 2.0, 1.0, lambda lo, hi: hi) == 2.0  # max below min: min wins


def test_a_bad_topic_root_is_a_config_error_raised_at_construction() -> None:
    with pytest.raises(UplinkConfigError, match="gateway"):
        Uplink(config=UplinkConfig(), site="S1", gateway="G/1", agent_version="1")


def test_unreadable_tls_files_are_a_config_error_raised_at_construction(tmp_path: Path) -> None:
    cfg = UplinkConfig(tls=TlsConfig(ca_file=str(tmp_path / "missing.pem")))
    with pytest.raises(UplinkConfigError, match="tls"):
        Uplink(config=cfg, site="S1", gateway="G1", agent_version="1")


# -- real broker -----------------------------------------------------------------------------


@pytest.mark.integration
def test_a_publish_is_acknowledged_and_reaches_a_subscriber(
    broker: Broker, make_uplink: Callable[..., ThreadedUplink]
) -> None:
    with Subscriber(broker, f"{ROOT}/telemetry") as sub:
        up = connected(make_uplink(config(broker)))
        assert up.publish("telemetry", b'{"x": 1}', token=("t", 1))
        [result] = collect(up, 1)
        assert result == PublishResult(("t", 1), True, result.reason, False, result.reason_code)
        assert result.reason_code is not None
        assert result.reason_code < 0x80
        assert sub.wait_for(lambda m: True).payload == b'{"x": 1}'
        assert up.inflight == 0
        assert up.stats().accepted == 1


@pytest.mark.integration
@pytest.mark.parametrize("protocol", ["mqtt5", "mqtt311"])
def test_many_publishes_each_get_exactly_one_accepted_result(
    broker: Broker, make_uplink: Callable[..., ThreadedUplink], protocol: str
) -> None:
    up = connected(make_uplink(config(broker, protocol=protocol, max_inflight=20)))
    for i in range(500):
        assert up.publish("telemetry", b"{}", token=i)
    results = collect(up, 500)
    assert sorted(r.token for r in results) == list(range(500))  # type: ignore[type-var]
    assert all(r.accepted and not r.lost for r in results)


@pytest.mark.integration
def test_state_is_retained_online_while_connected_and_offline_after_stop(
    broker: Broker, make_uplink: Callable[..., ThreadedUplink]
) -> None:
    up = connected(make_uplink(config(broker), clock_ms=lambda: 1234))
    with Subscriber(broker, f"{ROOT}/state") as sub:
        m = sub.wait_for(lambda m: m.retain)
        assert state_of(m) == {
            "online": True,
            "ts": 1234,
            "session": 1,
            "agent": "9.9.9",
            "encoding": "json",
        }
        up.stop()
        assert not up.connected
        m = sub.wait_for(lambda m: not state_of(m)["online"])
    with Subscriber(broker, f"{ROOT}/state") as late:
        m = late.wait_for(lambda m: True)
        assert m.retain
        assert state_of(m)["online"] is False
        assert state_of(m)["session"] == 1


@pytest.mark.integration
def test_the_last_will_marks_the_gateway_offline_when_the_process_is_killed(
    broker: Broker,
) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio
        from agent.config import UplinkConfig
        from agent.uplink import Uplink
        async def main():
            up = Uplink(config=UplinkConfig(host="{broker.host}", port={broker.port}),
                        site="S1", gateway="G1", agent_version="1.2.3")
            up.start()
            while not up.connected:
                await asyncio.sleep(0.01)
            print("connected", flush=True)
            await asyncio.sleep(60)
        asyncio.run(main())
        """
    )
    with Subscriber(broker, f"{ROOT}/state") as sub:
        proc = subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=Path(__file__).parents[2]
        )
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == b"connected\n"
            sub.wait_for(lambda m: state_of(m)["online"])
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
            if proc.stdout:
                proc.stdout.close()
        m = sub.wait_for(lambda m: not state_of(m)["online"])
        assert state_of(m)["session"] == 1
        assert state_of(m)["agent"] == "1.2.3"


@pytest.mark.integration
def test_an_outage_reports_in_flight_tokens_lost_and_refuses_new_publishes(
    broker: Broker, make_uplink: Callable[..., ThreadedUplink]
) -> None:
    up = connected(make_uplink(config(broker)))
    broker.pause()  # the broker holds the connection but answers nothing: PUBACKs stay out
    for i in range(5):
        assert up.publish("alarm", b"{}", token=i)
    assert up.inflight == 5
    broker.kill()
    wait_until(lambda: not up.connected, what="disconnect noticed")
    results = collect(up, 5)
    assert sorted(r.token for r in results) == list(range(5))  # type: ignore[type-var]
    assert all(r.lost and not r.accepted and r.reason == REASON_LOST for r in results)
    assert up.inflight == 0
    assert up.publish("alarm", b"{}", token=99) is False
    time.sleep(0.2)
    assert up.take_results() == []  # nothing will ever be said about a refused publish


@pytest.mark.integration
def test_the_uplink_reconnects_by_itself_after_the_broker_restarts_without_resending(
    broker: Broker, make_uplink: Callable[..., ThreadedUplink]
) -> None:
    up = connected(make_uplink(config(broker)))
    up.set_meta(b'{"tags": []}')
    broker.pause()
    assert up.publish("telemetry", b'{"old": 1}', token="old")
    broker.kill()
    wait_until(lambda: not up.connected, what="disconnect noticed")
    broker.start()
    with Subscriber(broker, f"{ROOT}/#") as sub:
        wait_until(lambda: up.connected, timeout_s=5, what="reconnected")
        assert state_of(sub.wait_for(lambda m: m.topic.endswith("/state")))["session"] == 2
        assert sub.wait_for(lambda m: m.topic.endswith("/meta")).payload == b'{"tags": []}'
        assert up.publish("telemetry", b'{"new": 1}', token="new")
        results = {r.token: r for r in collect(up, 2)}
        assert results["old"].lost
        assert results["new"].accepted
        time.sleep(0.2)
        assert all(b"old" not in m.payload for m in sub.messages)  # paho did not resend it
    stats = up.stats()
    assert (stats.sessions, stats.disconnects) == (2, 1)


@pytest.mark.integration
def test_commands_are_passed_raw_to_the_handler(
    broker: Broker, make_uplink: Callable[..., ThreadedUplink]
) -> None:
    got: list[bytes] = []
    event = threading.Event()

    def on_command(payload: bytes) -> None:
        got.append(payload)
        event.set()

    up = connected(make_uplink(config(broker), on_command=on_command))
    import paho.mqtt.publish as single

    single.single(f"{ROOT}/cmd", b'{"kid": "k"}', qos=1, hostname=broker.host, port=broker.port)
    assert event.wait(5)
    assert got == [b'{"kid": "k"}']
    assert up.connected


# -- authorisation -----------------------------------------------------------------------------

ACL = [
    "pattern readwrite safeedge/v1/+/%u/state",
    "pattern readwrite safeedge/v1/+/%u/meta",
    "pattern readwrite safeedge/v1/+/%u/telemetry",
    "pattern read safeedge/v1/+/%u/cmd",
]


@pytest.mark.integration
def test_an_acl_denial_on_mqtt5_is_reported_as_rejected_not_authorized(
    make_broker: BrokerFactory, make_uplink: Callable[..., ThreadedUplink]
) -> None:
    broker = make_broker(mode="password", users={"G1": "pw1"}, acl=ACL)
    up = connected(make_uplink(config(broker, username="G1"), password="pw1"))
    assert up.publish("alarm", b"{}", token="denied")
    assert up.publish("telemetry", b"{}", token="allowed")
    results = {r.token: r for r in collect(up, 2)}
    denied = results["denied"]
    assert (denied.accepted, denied.lost, denied.reason_code) == (False, False, 0x87)
    assert denied.reason == "not authorized"
    assert results["allowed"].accepted
    assert up.stats().rejected == 1


@pytest.mark.integration
def test_a_wrong_password_never_connects_and_is_counted_as_refused(
    make_broker: BrokerFactory, make_uplink: Callable[..., ThreadedUplink]
) -> None:
    broker = make_broker(mode="password", users={"G1": "pw1"})
    up = make_uplink(config(broker, username="G1"), password="nope")
    up.start()
    wait_until(lambda: up.stats().refused >= 2, what="refusals")
    assert not up.connected
    assert up.publish("telemetry", b"{}", token=1) is False


@pytest.mark.integration
def test_tls_with_a_client_certificate_connects_and_its_cn_is_the_acl_user(
    make_broker: BrokerFactory, make_uplink: Callable[..., ThreadedUplink]
) -> None:
    broker = make_broker(mode="tls", acl=ACL)
    cert = broker.client_cert("G1")
    tls = TlsConfig(
        ca_file=str(broker.ca_file), cert_file=str(cert.cert_file), key_file=str(cert.key_file)
    )
    up = connected(make_uplink(config(broker, tls=tls)))
    assert up.publish("telemetry", b"{}", token="ok")
    assert up.publish("alarm", b"{}", token="denied")
    results = {r.token: r for r in collect(up, 2)}
    assert results["ok"].accepted
    assert results["denied"].reason_code == 0x87


@pytest.mark.integration
def test_tls_never_falls_back_to_plain_text(
    broker: Broker, make_broker: BrokerFactory, make_uplink: Callable[..., ThreadedUplink]
) -> None:
    tls_broker = make_broker(mode="tls")
    cert = tls_broker.client_cert("G1")
    tls = TlsConfig(
        ca_file=str(tls_broker.ca_file), cert_file=str(cert.cert_file), key_file=str(cert.key_file)
    )
    up = make_uplink(config(broker, tls=tls))  # a plain-text broker: the handshake must fail
    up.start()
    wait_until(lambda: up.stats().connects >= 3, what="several attempts")
    assert up.stats().sessions == 0
    assert not up.connected
    assert "G1" not in broker.log()  # no MQTT CONNECT ever reached the plain listener


class BlackholeProxy:
    """A TCP relay to the broker that can start silently discarding traffic both ways while
    keeping the connections open: a half-open link as a dead NAT or a cut cable makes it."""

    def __init__(self, upstream_port: int) -> None:
        import socket

        self._up = upstream_port
        self.blackhole = threading.Event()
        self._srv = socket.create_server(("127.0.0.1", 0))
        self.port = self._srv.getsockname()[1]
        self._socks: list[Any] = [self._srv]
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while True:
            try:
                client, _ = self._srv.accept()
            except OSError:
                return
            with self._lock:
                self._socks.append(client)
                if self._closed:
                    client.close()
                    return
            try:
                upstream = socket.create_connection(("127.0.0.1", self._up))
            except OSError:
                continue
            with self._lock:
                self._socks.append(upstream)
                if self._closed:
                    upstream.close()
                    return
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: Any, dst: Any) -> None:
        try:
            while data := src.recv(65536):
                if not self.blackhole.is_set():
                    dst.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for s in self._socks:
                s.close()


@pytest.mark.integration
def test_a_half_open_connection_is_detected_within_one_and_a_half_keepalives(
    broker: Broker, make_uplink: Callable[..., ThreadedUplink]
) -> None:
    proxy = BlackholeProxy(broker.port)
    try:
        cfg = UplinkConfig(host="127.0.0.1", port=proxy.port, keepalive_s=5, reconnect_min_s=5)
        up = connected(make_uplink(cfg))
        time.sleep(1.0)  # let the connect traffic settle
        proxy.blackhole.set()
        t0 = time.monotonic()
        assert up.publish("alarm", b"{}", token="in flight")
        wait_until(lambda: not up.connected, timeout_s=10, what="half-open connection detected")
        detected = time.monotonic() - t0
        [result] = collect(up, 1)
    finally:
        proxy.close()
    assert detected <= 1.5 * 5, detected
    assert (result.token, result.lost) == ("in flight", True)
