"""The PUBACK shortcut (agent/uplink/puback.py) against a real Mosquitto: plain acks on both
protocols, and a refusal (0x87, a longer PUBACK) still reported with its reason."""

from __future__ import annotations

import time

import pytest

from agent.config import UplinkConfig
from agent.uplink import Outcome, PublishResult
from agent.uplink.puback import AckClient
from tests.conftest import BrokerFactory
from tests.support.loop_thread import ThreadedUplink
from tests.support.mosquitto import Subscriber

pytestmark = pytest.mark.integration

ACL = [
    "pattern readwrite safeedge/v1/+/%u/state",
    "pattern readwrite safeedge/v1/+/%u/telemetry",
    "pattern read safeedge/v1/+/%u/cmd",
    "user platform",
    "topic read safeedge/v1/#",
]


def results(up: ThreadedUplink, n: int) -> list[PublishResult]:
    out: list[PublishResult] = []
    deadline = time.monotonic() + 5
    while len(out) < n:
        assert time.monotonic() < deadline, out
        out += up.take_results()
        time.sleep(0.005)
    return out


@pytest.mark.parametrize("protocol", ["mqtt5", "mqtt311"])
def test_acks_and_refusals_come_back_per_token(make_broker: BrokerFactory, protocol: str) -> None:
    broker = make_broker(mode="password", users={"G1": "pw", "platform": "pw2"}, acl=ACL)
    cfg = UplinkConfig(host=broker.host, port=broker.port, username="G1", protocol=protocol,  # type: ignore[arg-type]
                       reconnect_min_s=0.05)  # fmt: skip
    up = ThreadedUplink(config=cfg, site="S1", gateway="G1", agent_version="0", password="pw")
    assert isinstance(up.uplink._client, AckClient)
    # A subscriber: without one Mosquitto answers MQTT 5 with 0x10 "no matching subscribers"
    # (a three-byte PUBACK, paho's own path); with one, a plain success (the shortcut).
    platform = Subscriber(broker, "safeedge/v1/#", username="platform", password="pw2")
    up.start()
    try:
        deadline = time.monotonic() + 5
        while not up.connected:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        for i in range(50):
            assert up.publish("telemetry", b'{"i": %d}' % i, token=("t", i))
        assert up.publish("alarm", b"{}", token=("a", 0))  # not in the ACL
        got = {r.token: r for r in results(up, 51)}
    finally:
        up.close()
        platform.close()
    assert all(got[("t", i)].outcome is Outcome.ACCEPTED for i in range(50))
    assert all(got[("t", i)].reason_code == 0 for i in range(50))
    refused = got[("a", 0)]
    if protocol == "mqtt5":
        assert (refused.outcome, refused.reason_code, refused.reason) == (
            Outcome.REJECTED, 0x87, "not authorized"
        )  # fmt: skip
    else:  # MQTT 3.1.1 has no reason codes: Mosquitto acknowledges and drops it
        assert refused.outcome is Outcome.ACCEPTED
