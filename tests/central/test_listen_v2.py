"""The platform side of uplink v2: body v2 and statistics records, zlib, shared subscriptions.

Against a real Mosquitto and the real Uplink (tests/support/loop_thread.py).
"""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.codec import Point, State, encode_envelope, event_body
from agent.codec_v2 import StatRow, stats_body, telemetry_body_v2
from agent.config import UplinkConfig
from agent.uplink.encoding import PayloadError, decode_payload
from central.cmd_listen import format_lines
from central.listen import Listener, Message
from central.shared import SharedSeqTracker
from tests.support.loop_thread import ThreadedUplink
from tests.support.mosquitto import Broker

V2 = telemetry_body_v2([("GT-101", 1000, 2.9, None), ("GT-103", 1000, None, "bad_comm")])
STATS = stats_body(60_000, [StatRow("TT-101", 60_000, 60, 20.1, 20.9, 20.5, 20.7, 0)])


def envelope(stream: str, seq: int, body: bytes, v: int = 1) -> bytes:
    return encode_envelope(
        site="S1", gateway="G1", stream=stream, seq=seq, ts_ms=seq, backfill=False, body=body, v=v
    )


def _uplink(broker: Broker, **cfg: object) -> ThreadedUplink:
    config = UplinkConfig(host=broker.host, port=broker.port, reconnect_min_s=0.05, **cfg)  # type: ignore[arg-type]
    up = ThreadedUplink(config=config, site="S1", gateway="G1", agent_version="0.1.0")
    up.start()
    deadline = time.monotonic() + 5
    while not up.connected:
        assert time.monotonic() < deadline, "uplink did not connect"
        time.sleep(0.01)
    return up


@pytest.fixture
def zlib_uplink(broker: Broker) -> Iterator[ThreadedUplink]:
    up = _uplink(broker, compression="zlib")
    yield up
    up.close()


class RawSubscriber:
    """A plain paho MQTT 5 client keeping payloads and content types as received."""

    def __init__(self, broker: Broker, topic: str) -> None:
        self.got: queue.Queue[tuple[str, bytes, str | None]] = queue.Queue()
        ready = threading.Event()
        c = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5
        )

        def on_message(client: object, userdata: object, msg: mqtt.MQTTMessage) -> None:
            ctype = getattr(msg.properties, "ContentType", None)
            self.got.put((msg.topic, bytes(msg.payload), ctype))

        c.on_message = on_message
        c.on_connect = lambda client, *a: client.subscribe(topic, qos=1)
        c.on_subscribe = lambda *a: ready.set()
        c.connect(broker.host, broker.port)
        c.loop_start()
        assert ready.wait(5)
        self._c = c

    def close(self) -> None:
        self._c.disconnect()
        self._c.loop_stop()


@pytest.mark.integration
def test_compressed_v2_telemetry_and_statistics_reach_the_listener_decoded(
    broker: Broker, zlib_uplink: ThreadedUplink
) -> None:
    raw = RawSubscriber(broker, "safeedge/v1/S1/G1/#")
    q: queue.Queue[Message] = queue.Queue()
    with Listener(host=broker.host, port=broker.port, on_message=q.put, validate=True):
        state = q.get(timeout=5)
        assert isinstance(state.body, State) and state.body.encoding == "json+zlib"
        assert zlib_uplink.publish("telemetry", envelope("telemetry", 1, V2, v=2), token=1)
        assert zlib_uplink.publish("telemetry", envelope("telemetry", 2, STATS, v=2), token=2)
        data, stats = q.get(timeout=5), q.get(timeout=5)
    try:
        assert data.encoding == "json+zlib" and data.schema_errors == ()
        assert data.body == [
            Point("GT-101", 1000, 2.9, None),
            Point("GT-103", 1000, None, "bad_comm"),
        ]
        assert stats.schema_errors == ()
        assert stats.body == (60_000, [StatRow("TT-101", 60_000, 60, 20.1, 20.9, 20.5, 20.7, 0)])
        assert format_lines(stats)[0].startswith("STATS  1 rows / 60 s: TT-101[n=60 min=20.1")
        seen = {}
        while len(seen) < 2:
            topic, payload, ctype = raw.got.get(timeout=5)
            seen.setdefault(topic.rsplit("/", 1)[1], (payload, ctype))
        state_payload, _ = seen["state"]
        assert state_payload.startswith(b"{")  # state is never compressed
        payload, ctype = seen["telemetry"]
        assert payload[0] == 0x78 and ctype == "application/json+zlib"
        assert zlib.decompress(payload) == envelope("telemetry", 1, V2, v=2)
    finally:
        raw.close()


def test_v1_and_v2_both_validate_and_a_v2_alarm_envelope_is_refused() -> None:
    listener = Listener(host="127.0.0.1", port=1, on_message=print, validate=True)
    for seq, body in enumerate((V2, STATS), start=1):
        m = listener.handle("safeedge/v1/S1/G1/telemetry", envelope("telemetry", seq, body, v=2))
        assert m is not None and m.schema_errors == () and m.error is None
    odd = b'{"t0":1,"at":[[0,{"A":null},{"A":"meh"}]]}'  # decodes; not a quality code
    m = listener.handle("safeedge/v1/S1/G1/telemetry", envelope("telemetry", 3, odd, v=2))
    assert m is not None and m.error is None
    assert m.schema_errors == ("body/at/0/2/A: 'meh' is not one of "
                               "['bad_comm', 'bad_device', 'bad_range', 'stale']",)  # fmt: skip
    bad = b'{"t0":1,"at":[[0,{"A":1},{"A":"bad_comm"}]]}'  # a quality on a value
    m = listener.handle("safeedge/v1/S1/G1/telemetry", envelope("telemetry", 4, bad, v=2))
    assert m is not None and m.error == "telemetry group 0: quality of 'A' needs a null value"
    ev = event_body("started", 1, {})
    m = listener.handle("safeedge/v1/S1/G1/event", envelope("event", 1, ev, v=2))
    assert m is not None and m.error == "envelope version 2 is for telemetry, not 'event'"


def test_zlib_payloads_are_bounded_and_must_be_whole() -> None:
    bomb = zlib.compress(b"{" + b" " * 2_000_000)
    with pytest.raises(PayloadError, match="inflates beyond 1000 bytes"):
        decode_payload(bomb, max_bytes=1000)
    with pytest.raises(PayloadError, match="truncated"):
        decode_payload(zlib.compress(b'{"a": 1}' * 50)[:-6])
    listener = Listener(host="127.0.0.1", port=1, on_message=print)
    m = listener.handle("safeedge/v1/S1/G1/event", b"\x78\x9c garbage")
    assert m is not None and m.error is not None and "does not inflate" in m.error


@pytest.mark.integration
def test_a_shared_subscription_splits_the_traffic_and_central_state_keeps_seqs_whole(
    broker: Broker,
) -> None:
    central = SharedSeqTracker()
    got: list[queue.Queue[Message]] = [queue.Queue(), queue.Queue()]
    shared = [
        Listener(host=broker.host, port=broker.port, on_message=got[i].put, share="fleet",
                 tracker=central, client_id=f"member-{i}")
        for i in range(2)
    ]  # fmt: skip
    alone: queue.Queue[Message] = queue.Queue()
    lone = Listener(  # a member keeping only its own seq state: what goes wrong without it
        host=broker.host, port=broker.port, on_message=alone.put, share="solo-state"
    )
    for listener in (*shared, lone):
        listener.start()
    up = _uplink(broker)
    try:
        n = 60
        for seq in range(1, n + 1):
            assert up.publish("event", envelope("event", seq, event_body("x", seq, {})), token=seq)
        assert up.publish("event", envelope("event", 7, event_body("x", 7, {})), token="dup")
        deadline = time.monotonic() + 10
        seqs: list[list[int]] = [[], []]
        while sum(map(len, seqs)) < n and time.monotonic() < deadline:
            for i in (0, 1):
                while not got[i].empty():
                    m = got[i].get()
                    if m.envelope is not None:
                        seqs[i].append(m.envelope.seq)
            time.sleep(0.01)
        time.sleep(0.2)  # the duplicate, had it been delivered, would be here by now
        for i in (0, 1):
            while not got[i].empty():
                m = got[i].get()
                seqs[i].append(m.envelope.seq) if m.envelope else None
        assert sorted(seqs[0] + seqs[1]) == list(range(1, n + 1))  # each once, none lost
        assert seqs[0] and seqs[1]  # the broker really split the stream
        assert central.missing("S1", "G1", "event") == []
        assert sum(li.stats.duplicates for li in shared) == 1
    finally:
        up.close()
        for listener in (*shared, lone):
            listener.stop()
    assert lone.stats.delivered >= n  # alone in its group: it saw everything, no gap
    assert lone.missing("S1", "G1", "event") == []


@settings(max_examples=200, deadline=None)
@given(st.permutations(list(range(1, 30))), st.integers(0, 29))
def test_the_shared_tracker_sees_each_seq_once_in_any_order(order: list[int], drop: int) -> None:
    t = SharedSeqTracker()
    again = [s for s in order[:3] if s != drop]  # resent (a lost PUBACK) after the others
    delivered = [s for s in order if s != drop] + again  # ``drop`` never comes (0: none lost)
    verdicts = [t.observe("S", "G", "event", s)[0] for s in delivered]
    assert verdicts.count("duplicate") == len(again)
    firsts = sorted(s for s, v in zip(delivered, verdicts, strict=True) if v != "duplicate")
    assert firsts == [s for s in range(1, 30) if s != drop]
    assert t.missing("S", "G", "event") == ([(drop, drop)] if 1 < drop < 29 else [])


@pytest.mark.integration
def test_listen_share_prints_what_its_group_receives(broker: Broker) -> None:
    repo = Path(__file__).parents[2]
    up = _uplink(broker)  # its retained state is on the broker before the listener subscribes
    proc = subprocess.Popen(
        [sys.executable, "-m", "central.cmd_listen", "--port", str(broker.port),
         "--share", "ingest", "--count", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=repo,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        seq = 0
        while proc.poll() is None and time.monotonic() < deadline:  # until it is subscribed
            seq += 1
            up.publish("event", envelope("event", seq, event_body("started", seq, {})), token=seq)
            time.sleep(0.2)
        out, err = proc.communicate(timeout=10)
    finally:
        up.close()
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, err
    # Mosquitto 2.0 hands the retained state to each member that subscribes (MQTT 5 brokers
    # differ here: docs/uplink.md); then the group's share of the events.
    lines = out.splitlines()
    assert lines[0].startswith("STATE  ONLINE  session 1"), out
    assert lines[1].startswith("EVENT  started  [S1/G1 #"), out
