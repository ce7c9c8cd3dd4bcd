"""The listener (platform side in small) against a real Mosquitto and the real Uplink."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.codec import (
    Alarm,
    Point,
    State,
    alarm_body,
    encode_envelope,
    event_body,
    telemetry_body,
)
from agent.config import UplinkConfig
from central.cmd_listen import format_json, format_lines
from central.listen import Listener, ListenerError, Message
from central.seqtrack import Gap
from tests.support.loop_thread import ThreadedUplink
from tests.support.mosquitto import Broker, free_port

REPO = Path(__file__).parents[2]


def envelope(stream: str, seq: int, body: bytes, *, gw: str = "G1") -> bytes:
    return encode_envelope(
        site="S1", gateway=gw, stream=stream, seq=seq, ts_ms=1000 + seq, backfill=False, body=body
    )


def event(seq: int, gw: str = "G1") -> bytes:
    return envelope("event", seq, event_body("started", 1000 + seq, {"n": seq}), gw=gw)


ALARM = alarm_body(
    tag="GT-102", alarm="high", event="raise", level=1, value=25.4, ts_ms=5,
    alarm_id="G1:GT-102:high:5", extra={"limit": 25.0},
)  # fmt: skip


# -- pure ------------------------------------------------------------------------------------


def test_a_listener_that_cannot_reach_a_broker_says_so() -> None:
    listener = Listener(host="127.0.0.1", port=free_port(), on_message=print)
    with pytest.raises(ListenerError, match="could not subscribe"):
        listener.start(timeout_s=0.5)


# -- real broker -----------------------------------------------------------------------------


@pytest.fixture
def received(broker: Broker) -> Iterator[tuple[Listener, queue.Queue[Message]]]:
    q: queue.Queue[Message] = queue.Queue()
    with Listener(host=broker.host, port=broker.port, on_message=q.put) as listener:
        yield listener, q


def take(q: queue.Queue[Message], n: int) -> list[Message]:
    return [q.get(timeout=5) for _ in range(n)]


@pytest.fixture
def uplink(broker: Broker) -> Iterator[ThreadedUplink]:
    cfg = UplinkConfig(host=broker.host, port=broker.port, reconnect_min_s=0.05)
    up = ThreadedUplink(  # the real Uplink on its own loop thread
        config=cfg, site="S1", gateway="G1", agent_version="0.1.0", clock_ms=lambda: 77
    )
    up.start()
    deadline = time.monotonic() + 5
    while not up.connected:
        assert time.monotonic() < deadline, "uplink did not connect"
        time.sleep(0.01)
    yield up
    up.close()


@pytest.mark.integration
def test_the_listener_decodes_what_the_uplink_publishes(
    received: tuple[Listener, queue.Queue[Message]], uplink: ThreadedUplink
) -> None:
    _, q = received
    assert uplink.publish("alarm", envelope("alarm", 1, ALARM), token=1)
    body = telemetry_body([("甲烷", 10, 0.4, None), ("O2", 10, None, "bad_comm")])
    assert uplink.publish("telemetry", envelope("telemetry", 1, body), token=2)
    msgs = {m.kind: m for m in take(q, 3)}
    state = msgs["state"].body
    assert isinstance(state, State)
    assert (state.online, state.session, state.ts) == (True, 1, 77)
    alarm = msgs["alarm"].body
    assert isinstance(alarm, Alarm)
    assert (alarm.tag, alarm.severity, alarm.extra) == ("GT-102", "major", {"limit": 25.0})
    assert msgs["telemetry"].body == [
        Point("甲烷", 10, 0.4, None),
        Point("O2", 10, None, "bad_comm"),
    ]
    assert msgs["telemetry"].envelope is not None
    assert msgs["telemetry"].envelope.id == "G1/telemetry/1"


@pytest.mark.integration
def test_the_listener_drops_duplicates_and_reports_gaps_and_late_records(
    received: tuple[Listener, queue.Queue[Message]], uplink: ThreadedUplink
) -> None:
    listener, q = received
    take(q, 1)  # the retained state
    for seq in (1, 2, 2, 5, 3, 1):
        assert uplink.publish("event", event(seq), token=seq)
    got = take(q, 4)
    assert [m.envelope.seq for m in got if m.envelope] == [1, 2, 5, 3]
    assert [m.gap for m in got] == [None, None, Gap("event", 3, 4), None]
    assert [m.late for m in got] == [False, False, False, True]
    time.sleep(0.2)
    assert q.empty()
    stats = listener.stats
    assert (stats.duplicates, stats.gaps, stats.missing, stats.late) == (2, 1, 2, 1)
    assert listener.missing("S1", "G1", "event") == [(4, 4)]


@pytest.mark.integration
def test_a_malformed_message_is_delivered_with_its_error_and_counted(
    received: tuple[Listener, queue.Queue[Message]], uplink: ThreadedUplink
) -> None:
    listener, q = received
    take(q, 1)
    assert uplink.publish("alarm", b'{"v": 1}', token=1)
    [bad] = take(q, 1)
    assert bad.error is not None
    assert "malformed envelope" in bad.error
    assert format_lines(bad)[0].startswith("BAD    safeedge/v1/S1/G1/alarm: ")
    assert listener.stats.malformed == 1


def test_readable_lines_put_the_alarm_first_and_json_lines_keep_the_body_verbatim() -> None:
    listener = Listener(host="127.0.0.1", port=1, on_message=print)
    alarm = listener.handle("safeedge/v1/S1/G1/alarm", envelope("alarm", 1042, ALARM))
    assert alarm is not None
    assert format_lines(alarm) == [
        "ALARM  GT-102 high RAISE level 1 (major) value 25.4 limit 25  [S1/G1 #1042]"
    ]
    doc = json.loads(format_json(alarm))
    assert doc["id"] == "G1/alarm/1042"
    assert doc["body"] == json.loads(ALARM)
    body = telemetry_body([(f"T{i}", 1, float(i), None) for i in range(8)])
    data = listener.handle("safeedge/v1/S1/G1/telemetry", envelope("telemetry", 9, body))
    assert data is not None
    assert format_lines(data) == [
        "DATA   8 points: T0=0 T1=1 T2=2 T3=3 T4=4 T5=5 +2 more  [S1/G1 #9]"
    ]
    later = listener.handle("safeedge/v1/S1/G1/telemetry", envelope("telemetry", 12, body))
    assert later is not None
    assert format_lines(later)[0] == "GAP    telemetry seq 10..11 missing (2)  [S1/G1]"


@pytest.mark.integration
def test_the_listen_command_prints_one_line_per_message_and_stops_after_count(
    broker: Broker, uplink: ThreadedUplink
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "central.cmd_listen", "--port", str(broker.port),
         "--count", "3", "--site", "S1", "--gateway", "G1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # the retained state: the listener is subscribed
        assert first.startswith("STATE  ONLINE  session 1 agent 0.1.0"), first
        assert uplink.publish("alarm", envelope("alarm", 1, ALARM), token=1)
        assert uplink.publish("event", event(1), token=2)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, err
    assert out.splitlines() == [
        "ALARM  GT-102 high RAISE level 1 (major) value 25.4 limit 25  [S1/G1 #1]",
        "EVENT  started n=1  [S1/G1 #1]",
    ]


def test_validation_reports_each_contract_violation_with_its_path_and_counts_it() -> None:
    listener = Listener(host="127.0.0.1", port=1, on_message=print, validate=True)
    good = telemetry_body([("T1", 1, 2.5, None), ("T2", 1, None, "bad_comm")])
    ok = listener.handle("safeedge/v1/S1/G1/telemetry", envelope("telemetry", 1, good))
    assert ok is not None
    assert ok.schema_errors == ()
    bad = b'{"points": [["T1", 1, 2.5, "so-so"]]}'
    flagged = listener.handle("safeedge/v1/S1/G1/telemetry", envelope("telemetry", 2, bad))
    assert flagged is not None
    assert len(flagged.schema_errors) == 1
    assert flagged.schema_errors[0].startswith("body/points/0/3: 'so-so' is not one of")
    assert format_lines(flagged)[-1].startswith("INVALID telemetry: body/points/0/3")
    assert json.loads(format_json(flagged))["schema_errors"] == list(flagged.schema_errors)
    result = listener.handle("safeedge/v1/S1/G1/cmd/result", b'{"id": "x", "status": "done"}')
    assert result is not None
    assert len(result.schema_errors) == 3  # detail and ts missing, status not in the enum
    assert listener.stats.invalid == 2
