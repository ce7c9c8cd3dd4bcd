"""Forwarder: a real store, a real uplink, a real Mosquitto with an ACL.

A gateway whose user may not publish to a topic (here: another gateway's, and its own alarm
topic) gets MQTT 5 PUBACK 0x87: the record is dead-lettered with its reason and a
``publish_rejected`` event goes upstream, so a refusal is never a silent loss.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.codec import decode_envelope, decode_event
from agent.config import UplinkConfig
from agent.forwarder import Forwarder
from agent.uplink import Uplink
from buffer import Store
from buffer.record import Stream
from tests.conftest import BrokerFactory
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
) -> Iterator[tuple[Broker, Store, Uplink, Forwarder]]:
    broker = make_broker(mode="password", users={"G1": "pw1", "platform": "pw2"}, acl=ACL)
    store = Store.open(path=tmp_path / "b.db", key_file=tmp_path / "b.key", gateway_id="G1")
    cfg = UplinkConfig(host=broker.host, port=broker.port, username="G1", reconnect_min_s=0.05)
    up = Uplink(config=cfg, site="S1", gateway="G1", agent_version="0", password="pw1")
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
    up.stop(timeout_s=1)
    store.close()


def test_a_refused_alarm_is_dead_lettered_and_reported_as_a_publish_rejected_event(
    parts: tuple[Broker, Store, Uplink, Forwarder],
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
    up = Uplink(config=cfg, site="S1", gateway="G1", agent_version="0", password="pw1")
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
        up.stop(timeout_s=1)
        store.close()


def test_a_backlog_drains_at_the_configured_rate_while_fresh_alarms_pass_at_once(
    make_broker: BrokerFactory, tmp_path: Path
) -> None:
    broker = make_broker()
    store = Store.open(path=tmp_path / "b.db", key_file=tmp_path / "b.key", gateway_id="G1")
    up = Uplink(
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
        up.stop(timeout_s=1)
        store.close()
    assert 1.3 <= elapsed <= 3.0  # 30 records beyond the first 20 at 20/s
