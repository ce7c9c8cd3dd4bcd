"""Forwarder: a real store, a real uplink, a real Mosquitto with an ACL.

A gateway whose user (password user, or the CN of its TLS client certificate) may not publish to
a topic (here: another gateway's, and its own alarm topic) gets MQTT 5 PUBACK 0x87: the record
is dead-lettered with its reason and a ``publish_rejected`` event goes upstream, so a refusal is
never a silent loss (a refused event is dead-lettered and logged only).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.codec import decode_envelope, decode_event
from agent.config import TlsConfig, UplinkConfig
from agent.forwarder import Forwarder
from buffer import Store, StoreReader
from buffer.record import Stream
from tests.conftest import BrokerFactory
from tests.support.loop_thread import ThreadedUplink
from tests.support.mosquitto import Broker, Subscriber

pytestmark = pytest.mark.integration

ACL = [
    "pattern readwrite safeedge/v1/+/%u/state",
    "pattern readwrite safeedge/v1/+/%u/meta",
    "pattern readwrite safeedge/v1/+/%u/telemetry",
    "pattern readwrite safeedge/v1/+/%u/event",
    "pattern read safeedge/v1/+/%u/cmd",
    "user platform",
    "topic read safeedge/v1/#",
]


def pump_until(fwd: Forwarder, cond: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        if fwd.pump() == 0:
            time.sleep(0.005)


@pytest.fixture
def parts(
    tmp_path: Path, make_broker: BrokerFactory
) -> Iterator[tuple[Broker, Store, ThreadedUplink, Forwarder]]:
    broker = make_broker(mode="password", users={"G1": "pw1", "platform": "pw2"}, acl=ACL)
    store = Store.open(path=tmp_path / "b.db", key_file=tmp_path / "b.key", gateway_id="G1")
    cfg = UplinkConfig(host=broker.host, port=broker.port, username="G1", reconnect_min_s=0.05)
    up = ThreadedUplink(config=cfg, site="S1", gateway="G1", agent_version="0", password="pw1")
    fwd = Forwarder(
        store=store,
        uplink=up,
        site="S1",
        gateway="G1",
        backfill_after_s=10,
        max_inflight=20,
        clock_ms=lambda: time.time_ns() // 1_000_000,
    )
    up.start()
    deadline = time.monotonic() + 5
    while not up.connected and time.monotonic() < deadline:
        time.sleep(0.01)
    yield broker, store, up, fwd
    up.close()
    store.close()


def test_a_refused_alarm_is_dead_lettered_and_reported_as_a_publish_rejected_event(
    parts: tuple[Broker, Store, ThreadedUplink, Forwarder],
) -> None:
    broker, store, up, fwd = parts
    with Subscriber(broker, "safeedge/v1/#", username="platform", password="pw2") as platform:
        store.append(Stream.ALARM, [b'{"a": 1}', b'{"a": 2}'])
        store.append(Stream.TELEMETRY, [b'{"points": []}'])
        pump_until(fwd, lambda: fwd.stats.rejected == 2 and fwd.stats.delivered >= 3)
        events: list[dict[str, Any]] = []
        deadline = time.monotonic() + 5
        while len(events) < 2:
            assert time.monotonic() < deadline, platform.messages
            fwd.pump()
            events = [
                decode_event(decode_envelope(m.payload).body)
                for m in platform.messages
                if m.topic.endswith("/event")
            ]
            time.sleep(0.01)
    assert [(e["kind"], e["stream"], e["seq"], e["reason"]) for e in events] == [
        ("publish_rejected", "alarm", 1, "not authorized"),
        ("publish_rejected", "alarm", 2, "not authorized"),
    ]
    assert events[0]["id"] == "G1/alarm/1"
    stats = store.stats().streams
    assert (stats[Stream.ALARM].dead, stats[Stream.ALARM].undelivered) == (2, 0)
    assert stats[Stream.TELEMETRY].delivered == 1
    assert stats[Stream.EVENT].delivered == 2
    assert not any(m.topic.endswith("/alarm") for m in platform.messages)


def test_a_refused_event_is_dead_lettered_without_an_event_about_itself(
    make_broker: BrokerFactory, tmp_path: Path
) -> None:
    acl = [a for a in ACL if not a.endswith("/event")]
    broker = make_broker(mode="password", users={"G1": "pw1", "platform": "pw2"}, acl=acl)
    store = Store.open(path=tmp_path / "b.db", key_file=tmp_path / "b.key", gateway_id="G1")
    cfg = UplinkConfig(host=broker.host, port=broker.port, username="G1")
    up = ThreadedUplink(config=cfg, site="S1", gateway="G1", agent_version="0", password="pw1")
    fwd = Forwarder(
        store=store, uplink=up, site="S1", gateway="G1", backfill_after_s=10,
        max_inflight=20, clock_ms=lambda: time.time_ns() // 1_000_000,
    )  # fmt: skip
    up.start()
    try:
        store.append(Stream.ALARM, [b"{}"])
        pump_until(fwd, lambda: fwd.stats.rejected == 2)  # the alarm, then its event
        for _ in range(20):  # nothing further: a refused event does not beget another one
            fwd.pump()
            time.sleep(0.01)
        assert fwd.stats.rejected == 2
        assert store.stats().streams[Stream.EVENT].dead == 1
        assert store.stats().streams[Stream.EVENT].last_seq == 1
    finally:
        up.close()
        store.close()


def test_a_backlog_drains_at_the_configured_rate_while_fresh_alarms_pass_at_once(
    make_broker: BrokerFactory, tmp_path: Path
) -> None:
    broker = make_broker()
    store = Store.open(path=tmp_path / "b.db", key_file=tmp_path / "b.key", gateway_id="G1")
    up = ThreadedUplink(
        config=UplinkConfig(host=broker.host, port=broker.port),
        site="S1", gateway="G1", agent_version="0",
    )  # fmt: skip

    def now() -> int:
        return time.time_ns() // 1_000_000

    fwd = Forwarder(
        store=store, uplink=up, site="S1", gateway="G1", backfill_after_s=10,
        max_inflight=100, clock_ms=now, drain_rate=20.0,
    )  # fmt: skip
    up.start()
    try:
        pump_until(fwd, lambda: up.connected)
        store.append(Stream.TELEMETRY, [b'{"points":[]}'] * 50, created_ms=now() - 3_600_000)
        t0 = time.monotonic()
        pump_until(fwd, lambda: fwd.stats.delivered >= 20)  # the bucket's first second
        store.append(Stream.ALARM, [b"{}"])
        pump_until(fwd, lambda: store.stats().streams[Stream.ALARM].delivered == 1, 0.5)
        pump_until(fwd, lambda: fwd.stats.delivered == 51)
        elapsed = time.monotonic() - t0
    finally:
        up.close()
        store.close()
    assert 1.3 <= elapsed <= 3.0  # 30 records beyond the first 20 at 20/s


def test_after_an_outage_live_telemetry_overtakes_the_throttled_backlog_and_every_seq_arrives(
    make_broker: BrokerFactory, tmp_path: Path
) -> None:
    broker = make_broker()
    store = Store.open(path=tmp_path / "b.db", key_file=tmp_path / "b.key", gateway_id="G1")
    cfg = UplinkConfig(
        host=broker.host, port=broker.port, reconnect_min_s=0.05, reconnect_max_s=0.4
    )
    up = ThreadedUplink(config=cfg, site="S1", gateway="G1", agent_version="0")

    def now() -> int:
        return time.time_ns() // 1_000_000

    fwd = Forwarder(
        store=store, uplink=up, site="S1", gateway="G1", backfill_after_s=2,
        max_inflight=50, clock_ms=now, drain_rate=10.0,
    )  # fmt: skip
    up.start()
    try:
        pump_until(fwd, lambda: up.connected)
        broker.stop()  # the outage: readings pile up in the buffer
        pump_until(fwd, lambda: not up.connected)
        backlog = 40
        for i in range(backlog):
            store.append(Stream.TELEMETRY, [b'{"points":[]}'], created_ms=now() - 60_000 + i)
        broker.start()
        with Subscriber(broker, "safeedge/v1/S1/G1/telemetry") as platform:
            pump_until(fwd, lambda: up.connected)
            live: list[int] = []
            next_live = time.monotonic()
            deadline = time.monotonic() + 20
            while fwd.stats.delivered < backlog + 8:
                assert time.monotonic() < deadline, f"delivered {fwd.stats.delivered}"
                if len(live) < 8 and time.monotonic() >= next_live:  # live data, 5 per second
                    live += store.append(Stream.TELEMETRY, [b'{"points":[]}'])
                    next_live += 0.2
                if fwd.pump() == 0:
                    time.sleep(0.005)
            # Delivered means acknowledged by the broker; give the subscriber a moment too.
            pump_until(fwd, lambda: len(platform.messages) >= backlog + 8)
            envelopes = [decode_envelope(m.payload) for m in platform.messages]
    finally:
        up.close()
        store.close()
    arrival = [e.seq for e in envelopes]
    assert sorted(set(arrival)) == list(range(1, backlog + 9))  # every seq, none missing
    last_backlog = max(i for i, e in enumerate(envelopes) if e.seq <= backlog)
    # The whole backlog takes about 3 s at 10/s; live readings made meanwhile do not queue
    # behind it: each one reaches the platform before the last of the backlog.
    assert all(arrival.index(seq) < last_backlog for seq in live), arrival
    assert {e.backfill for e in envelopes if e.seq <= backlog} == {True}
    assert {e.backfill for e in envelopes if e.seq > backlog} == {False}


def tls_uplink(broker: Broker, cn: str, gateway: str) -> ThreadedUplink:
    cert = broker.client_cert(cn)
    tls = TlsConfig(
        ca_file=str(broker.ca_file), cert_file=str(cert.cert_file), key_file=str(cert.key_file)
    )
    cfg = UplinkConfig(host=broker.host, port=broker.port, tls=tls, reconnect_min_s=0.05)
    return ThreadedUplink(config=cfg, site="S1", gateway=gateway, agent_version="0")


def test_a_gateway_certificate_cannot_publish_to_another_gateways_topics_and_nothing_is_lost(
    make_broker: BrokerFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = make_broker(mode="tls", acl=ACL)  # the client certificate's CN is the ACL user
    platform_cert = broker.client_cert("platform")
    platform = Subscriber(
        broker,
        "safeedge/v1/#",
        ca_certs=str(broker.ca_file),
        certfile=str(platform_cert.cert_file),
        keyfile=str(platform_cert.key_file),
    )
    # Misconfigured: G2's topic root (and buffer) with G1's certificate.
    wrong = Store.open(path=tmp_path / "g2.db", key_file=tmp_path / "g2.key", gateway_id="G2")
    up = tls_uplink(broker, "G1", "G2")
    fwd = Forwarder(
        store=wrong, uplink=up, site="S1", gateway="G2", backfill_after_s=10,
        max_inflight=20, clock_ms=lambda: time.time_ns() // 1_000_000,
    )  # fmt: skip
    up.start()
    try:
        pump_until(fwd, lambda: up.connected)
        wrong.append(Stream.ALARM, [b'{"a": 1}'])
        wrong.append(Stream.TELEMETRY, [b'{"points": []}', b'{"points": []}'])
        # 3 records, then one publish_rejected event for each, which are refused as well:
        # dead-lettered and logged, not reported again (no loop).
        pump_until(fwd, lambda: fwd.stats.rejected == 6)
        for _ in range(20):
            fwd.pump()
            time.sleep(0.01)
        assert fwd.stats.rejected == 6
        assert fwd.stats.delivered == 0
        assert up.connected  # a refusal is per message: the session stays up
    finally:
        up.close()
    stats = wrong.stats().streams
    forwarded = [s for s in Stream if s.forwarded]
    assert [(stats[s].dead, stats[s].undelivered) for s in forwarded] == [(1, 0), (3, 0), (2, 0)]
    assert stats[Stream.EVENT].last_seq == 3
    events = [decode_event(r.payload) for r in wrong.resend(Stream.EVENT, 1, 3)]
    assert sorted((e["kind"], e["stream"], e["seq"], e["reason"]) for e in events) == [
        ("publish_rejected", "alarm", 1, "not authorized"),
        ("publish_rejected", "telemetry", 1, "not authorized"),
        ("publish_rejected", "telemetry", 2, "not authorized"),
    ]
    assert events[0]["id"] == "G2/alarm/1"
    assert "publish_rejected" in caplog.text
    wrong.close()
    with StoreReader.open(
        path=tmp_path / "g2.db", key_file=tmp_path / "g2.key", gateway_id="G2"
    ) as r:
        dead = [(x.stream, x.seq, x.state, x.reason) for x in r.records()]
    assert dead == [
        (Stream.ALARM, 1, "dead", "not authorized"),
        *[(Stream.EVENT, q, "dead", "not authorized") for q in (1, 2, 3)],
        *[(Stream.TELEMETRY, q, "dead", "not authorized") for q in (1, 2)],
    ]

    # The same certificate with its own topic root works, on the same broker.
    store = Store.open(path=tmp_path / "g1.db", key_file=tmp_path / "g1.key", gateway_id="G1")
    up = tls_uplink(broker, "G1", "G1")
    fwd = Forwarder(
        store=store, uplink=up, site="S1", gateway="G1", backfill_after_s=10,
        max_inflight=20, clock_ms=lambda: time.time_ns() // 1_000_000,
    )  # fmt: skip
    up.start()
    try:
        store.append(Stream.TELEMETRY, [b'{"points": []}'])
        store.append(Stream.EVENT, [b'{"kind": "started", "ts": 1}'])
        pump_until(fwd, lambda: fwd.stats.delivered == 2)
        platform.wait_for(lambda m: m.topic == "safeedge/v1/S1/G1/telemetry")
        platform.wait_for(lambda m: m.topic == "safeedge/v1/S1/G1/event")
    finally:
        up.close()
        store.close()
        platform.close()
    assert fwd.stats.rejected == 0
    assert not any("/G2/" in m.topic for m in platform.messages)
