"""Reconnect attempts are logged with their cause, rate-limited, against a real Mosquitto."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest

from agent.config import UplinkConfig
from tests.support.loop_thread import ThreadedUplink
from tests.support.mosquitto import Broker

pytestmark = pytest.mark.integration


@pytest.fixture
def uplink(broker: Broker) -> Iterator[ThreadedUplink]:
    cfg = UplinkConfig(
        host=broker.host, port=broker.port, keepalive_s=5, reconnect_min_s=0.05,
        reconnect_max_s=0.2,
    )  # fmt: skip
    up = ThreadedUplink(config=cfg, site="S1", gateway="G1", agent_version="9.9.9")
    yield up
    up.close()


def test_failed_attempts_name_their_cause_and_the_reconnect_counts_them(
    broker: Broker, uplink: ThreadedUplink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent.uplink")
    broker.stop()
    uplink.start()
    deadline = time.monotonic() + 10
    while uplink.stats().connects < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert uplink.stats().connects >= 6
    broker.start()
    deadline = time.monotonic() + 10
    while not uplink.connected and time.monotonic() < deadline:
        time.sleep(0.05)
    assert uplink.connected
    lines = [r.getMessage() for r in caplog.records]
    failed = [m for m in lines if m.startswith("uplink_connect_failed")]
    # one line in the 10 s window however many attempts failed, with why and when the next
    assert len(failed) == 1, lines
    assert "ConnectionRefusedError" in failed[0] and "attempt=1" in failed[0]
    assert "retry_in_s=" in failed[0]
    connected = next(m for m in lines if m.startswith("uplink_connected"))
    attempts = int(connected.split("attempts=")[1].split()[0])
    assert attempts >= 6  # every failed attempt is counted in the line that ends the outage
    assert uplink.uplink.last_error is not None
    assert "ConnectionRefusedError" in uplink.uplink.last_error
