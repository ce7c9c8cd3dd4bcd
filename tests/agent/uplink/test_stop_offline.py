"""Stopping leaves ``R/state`` offline even when the offline state cannot be acknowledged.

Real Mosquitto, frozen (SIGSTOP) while the uplink stops with its in-flight window full: paho
holds the offline PUBLISH unsent, no PUBACK can come; the uplink reports ``not_acked`` and ends
with DISCONNECT with Will Message (MQTT 5) or drops the connection (3.1.1), and once the broker
runs again the retained state is offline. Limitation: here Mosquitto 2 also drops a plain
DISCONNECT sent while it was frozen as an error ("out of memory") and publishes the will, so
this test does not tell the two endings apart; the soak (benchmarks/soak_commands.py, the
retained state read after the flood) is what showed a plain DISCONNECT leaving it online.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import msgspec
import pytest

from agent.codec import decode_state
from agent.config import UplinkConfig
from tests.support.loop_thread import ThreadedUplink
from tests.support.mosquitto import Broker, Subscriber

pytestmark = pytest.mark.integration

ROOT = "safeedge/v1/S1/G1"


def online(payload: bytes) -> bool:
    return bool(msgspec.structs.asdict(decode_state(payload))["online"])


@pytest.fixture
def uplinks() -> Iterator[list[ThreadedUplink]]:
    made: list[ThreadedUplink] = []
    yield made
    for up in made:
        up.close()


@pytest.mark.parametrize("protocol", ["mqtt5", "mqtt311"])
def test_an_unacknowledged_offline_state_still_leaves_the_gateway_offline(
    broker: Broker, uplinks: list[ThreadedUplink], protocol: str, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = UplinkConfig(
        host=broker.host, port=broker.port, protocol=protocol, max_inflight=3, keepalive_s=30
    )
    up = ThreadedUplink(config=cfg, site="S1", gateway="G1", agent_version="1")
    uplinks.append(up)
    with Subscriber(broker, f"{ROOT}/state") as sub:
        up.start()
        sub.wait_for(lambda m: online(m.payload))
    broker.pause()
    try:
        for i in range(3):  # the window fills: nothing is acknowledged while the broker sleeps
            assert up.publish("telemetry", b"{}", token=i)
        with caplog.at_level(logging.INFO, logger="agent.uplink"):
            up.stop(timeout_s=1.0)
    finally:
        broker.resume()
    assert "offline_state=not_acked" in caplog.text
    with Subscriber(broker, f"{ROOT}/state") as late:  # the retained state, then the will
        late.wait_for(lambda m: not online(m.payload), timeout_s=10)


def test_an_acknowledged_offline_state_is_followed_by_a_plain_disconnect(
    broker: Broker, uplinks: list[ThreadedUplink], caplog: pytest.LogCaptureFixture
) -> None:
    up = ThreadedUplink(
        config=UplinkConfig(host=broker.host, port=broker.port),
        site="S1",
        gateway="G1",
        agent_version="1",
    )
    uplinks.append(up)
    with Subscriber(broker, f"{ROOT}/state") as sub:
        up.start()
        sub.wait_for(lambda m: online(m.payload))
        with caplog.at_level(logging.INFO, logger="agent.uplink"):
            up.stop()
        sub.wait_for(lambda m: not online(m.payload))
    assert "offline_state=acked" in caplog.text
    deadline = time.monotonic() + 5
    while "G1 disconnected." not in broker.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "G1 disconnected." in broker.log()  # a DISCONNECT, not "closed its connection"
