"""The broker recipe of docs/uplink.md against a real Mosquitto 2.0: a second gateway's
certificate cannot take over the first's session, nor read or write its topics.

Recipe: ``require_certificate``, ``use_identity_as_username`` (CN → username),
``use_username_as_clientid`` (username → client id, whatever the client sent) and ``pattern``
ACL lines keyed on ``%u``. The control case without ``use_username_as_clientid`` shows what
the option prevents: there the intruder knocks the gateway offline.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.config import TlsConfig, UplinkConfig
from tests.conftest import BrokerFactory
from tests.support.loop_thread import ThreadedUplink
from tests.support.mosquitto import Broker

pytestmark = pytest.mark.integration

ROOT = "safeedge/v1/S1"
RECIPE_ACL = [  # docs/uplink.md, "Broker ACL"
    "pattern readwrite safeedge/v1/+/%u/state",
    "pattern write safeedge/v1/+/%u/meta",
    "pattern write safeedge/v1/+/%u/telemetry",
    "pattern write safeedge/v1/+/%u/alarm",
    "pattern write safeedge/v1/+/%u/event",
    "pattern write safeedge/v1/+/%u/cmd/result",
    "pattern read safeedge/v1/+/%u/cmd",
    "user platform",
    "topic readwrite safeedge/v1/#",
]


class Intruder:
    """G2's certificate, connecting with whatever client id it likes (a persistent session)."""

    def __init__(self, broker: Broker, client_id: str) -> None:
        cert = broker.client_cert("G2")
        self.messages: list[str] = []
        self.acks: dict[int, int] = {}
        self.connected = threading.Event()
        self.assigned: str | None = None
        c = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        c.tls_set(
            ca_certs=str(broker.ca_file), certfile=str(cert.cert_file), keyfile=str(cert.key_file)
        )

        def on_connect(client: mqtt.Client, u: object, f: object, rc: Any, props: Any) -> None:
            self.assigned = getattr(props, "AssignedClientIdentifier", None)
            client.subscribe(f"{ROOT}/G1/cmd", qos=1)
            self.connected.set()

        c.on_connect = on_connect
        c.on_message = lambda client, u, msg: self.messages.append(msg.topic)
        c.on_publish = lambda client, u, mid, rc, props: self.acks.__setitem__(mid, rc.value)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600  # try to resume (take over) a persistent session
        c.connect(broker.host, broker.port, keepalive=10, clean_start=False, properties=props)
        c.loop_start()
        assert self.connected.wait(5), "intruder could not connect"
        self.client = c

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _gateway(broker: Broker) -> ThreadedUplink:
    cert = broker.client_cert("G1")
    tls = TlsConfig(
        ca_file=str(broker.ca_file), cert_file=str(cert.cert_file), key_file=str(cert.key_file)
    )
    cfg = UplinkConfig(
        host=broker.host, port=broker.port, tls=tls, reconnect_min_s=0.05, reconnect_max_s=0.2
    )
    up = ThreadedUplink(config=cfg, site="S1", gateway="G1", agent_version="9.9.9")
    up.start()
    deadline = time.monotonic() + 5
    while not up.connected:
        assert time.monotonic() < deadline, "gateway did not connect"
        time.sleep(0.01)
    return up


def _platform_publish(broker: Broker, topic: str) -> None:
    cert = broker.client_cert("platform")
    c = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5
    )
    c.tls_set(
        ca_certs=str(broker.ca_file), certfile=str(cert.cert_file), keyfile=str(cert.key_file)
    )
    c.connect(broker.host, broker.port)
    c.loop_start()
    c.publish(topic, b'{"kid": "k"}', qos=1).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()


@pytest.mark.parametrize("stolen_id", ["G1", "safeedge-S1-G1"])
def test_a_second_certificate_cannot_take_over_the_first_gateways_session(
    make_broker: BrokerFactory, stolen_id: str
) -> None:
    broker = make_broker(mode="tls", acl=RECIPE_ACL, extra_config=["use_username_as_clientid true"])
    gw = _gateway(broker)
    try:
        intruder = Intruder(broker, client_id=stolen_id)
        try:
            time.sleep(1.0)
            assert gw.connected and gw.stats().sessions == 1 and gw.stats().disconnects == 0
            _platform_publish(broker, f"{ROOT}/G1/cmd")
            mid = intruder.client.publish(f"{ROOT}/G1/alarm", b"{}", qos=1).mid
            time.sleep(0.5)
            assert intruder.messages == []  # G1's commands are not delivered to G2
            assert intruder.acks.get(mid) == 0x87  # and G2 cannot write as G1
            assert gw.stats().disconnects == 0
        finally:
            intruder.close()
    finally:
        gw.close()
    log = broker.log()
    assert "as G1" in log and "as G2" in log  # the broker named both by their certificate
    assert "already connected, closing old connection" not in log


def test_control_without_use_username_as_clientid_the_intruder_knocks_the_gateway_off(
    make_broker: BrokerFactory,
) -> None:
    """What the option prevents (the residual risk without it): the ACL still keeps G2 out of
    G1's topics, but a stolen client id disconnects G1 again and again."""
    broker = make_broker(mode="tls", acl=RECIPE_ACL)
    gw = _gateway(broker)
    try:
        intruder = Intruder(broker, client_id="G1")  # the agent's id is its certificate CN
        try:
            deadline = time.monotonic() + 5
            while gw.stats().disconnects == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert gw.stats().disconnects >= 1
            assert intruder.messages == []
        finally:
            intruder.close()
    finally:
        gw.close()
