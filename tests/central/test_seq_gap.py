"""``seq_gap`` events close the gaps they explain: accounted for, not missing.

The trackers are pure (no peer); the listener tests run against a real Mosquitto with the real
uplink publishing, alone and as members of a shared subscription with central state.
"""

from __future__ import annotations

import itertools
import queue
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.codec import encode_envelope, event_body
from agent.codec_v2 import telemetry_body_v2
from agent.config import UplinkConfig
from central.listen import Listener, Message
from central.ranges import SeqRanges
from central.seqtrack import Gap, SeqTracker
from central.shared import SharedSeqTracker
from tests.support.loop_thread import ThreadedUplink
from tests.support.mosquitto import Broker

V2 = telemetry_body_v2([("GT-101", 1000, 2.9, None)])


def seq_gap(first: int, last: int, stream: str = "telemetry") -> bytes:
    return event_body(
        "seq_gap", 5, {"stream": stream, "from_seq": first, "to_seq": last, "reason": "power_loss"}
    )


def test_a_report_before_the_jump_makes_the_jump_no_gap_and_leaves_the_rest_missing() -> None:
    for t in (SeqTracker(), SharedSeqTracker()):
        t.observe("S", "G", "telemetry", 1)
        t.observe("S", "G", "telemetry", 2)
        assert t.account("S", "G", "telemetry", 3, 5) == 3
        assert t.observe("S", "G", "telemetry", 6) == ("new", None)  # 3..5 reported lost
        assert t.observe("S", "G", "telemetry", 10) == ("new", Gap("telemetry", 7, 9))
        assert t.missing("S", "G", "telemetry") == [(7, 9)]
        assert t.account("S", "G", "telemetry", 3, 5) == 0  # the same report again: nothing new


def test_a_report_after_the_jump_closes_the_hole_and_a_partial_one_splits_it() -> None:
    for t in (SeqTracker(), SharedSeqTracker()):
        t.observe("S", "G", "telemetry", 1)
        assert t.observe("S", "G", "telemetry", 11) == ("new", Gap("telemetry", 2, 10))
        assert t.account("S", "G", "telemetry", 4, 6) == 3
        assert t.missing("S", "G", "telemetry") == [(2, 3), (7, 10)]
        assert t.observe("S", "G", "telemetry", 3)[0] == "late"
        assert t.account("S", "G", "event", 2, 10) > 0  # another stream's report: not this one
        assert t.missing("S", "G", "telemetry") == [(2, 2), (7, 10)]


def test_a_jump_partly_reported_counts_only_what_is_unaccounted() -> None:
    for t in (SeqTracker(), SharedSeqTracker()):
        t.observe("S", "G", "alarm", 1)
        t.account("S", "G", "alarm", 2, 4)
        verdict, gap = t.observe("S", "G", "alarm", 8)
        assert gap == Gap("alarm", 2, 7, accounted=3) and gap.missing == 3
        assert t.missing("S", "G", "alarm") == [(5, 7)]


def test_reports_are_per_gateway_and_a_report_before_any_record_waits_for_the_baseline() -> None:
    t = SeqTracker()
    t.account("S", "G1", "telemetry", 5, 9)
    assert t.observe("S", "G1", "telemetry", 3) == ("new", None)  # the baseline
    assert t.observe("S", "G1", "telemetry", 4) == ("new", None)
    assert t.observe("S", "G1", "telemetry", 10) == ("new", None)
    t.observe("S", "G2", "telemetry", 4)
    assert t.observe("S", "G2", "telemetry", 10) == ("new", Gap("telemetry", 5, 9))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 40), st.integers(0, 40)), max_size=30))
def test_seq_ranges_match_a_plain_set(ops: list[tuple[bool, int, int]]) -> None:
    r, model = SeqRanges(), set[int]()
    for add, a, b in ops:
        lo, hi = min(a, b), max(a, b)
        if add:
            r.add(lo, hi)
            model |= set(range(lo, hi + 1))
        else:
            r.remove(lo, hi)
            model -= set(range(lo, hi + 1))
        items = r.items()
        assert sorted(s for a_, b_ in items for s in range(a_, b_ + 1)) == sorted(model)
        assert all(b1 + 1 < a2 for (_, b1), (a2, _) in itertools.pairwise(items))
        assert r.overlap(5, 30) == len(model & set(range(5, 31)))
        outside = {s for a_, b_ in r.outside(5, 30) for s in range(a_, b_ + 1)}
        assert outside == set(range(5, 31)) - model


def envelope(stream: str, seq: int, body: bytes) -> bytes:
    v = 2 if stream == "telemetry" else 1
    return encode_envelope(
        site="S1", gateway="G1", stream=stream, seq=seq, ts_ms=seq, backfill=False, body=body, v=v
    )


def uplink(broker: Broker) -> ThreadedUplink:
    config = UplinkConfig(host=broker.host, port=broker.port, reconnect_min_s=0.05)
    up = ThreadedUplink(config=config, site="S1", gateway="G1", agent_version="0.1.0")
    up.start()
    deadline = time.monotonic() + 5
    while not up.connected:
        assert time.monotonic() < deadline, "uplink did not connect"
        time.sleep(0.01)
    return up


def send(up: ThreadedUplink, telemetry: list[int], gaps: list[tuple[int, int]]) -> None:
    """The gateway's order: the event stream goes before the telemetry backlog."""
    for i, (first, last) in enumerate(gaps, start=1):
        assert up.publish("event", envelope("event", i, seq_gap(first, last)), token=("e", i))
    for seq in telemetry:
        assert up.publish("telemetry", envelope("telemetry", seq, V2), token=("t", seq))


def drain(queues: list[queue.Queue[Message]], n: int) -> list[Message]:
    out: list[Message] = []
    deadline = time.monotonic() + 10
    while len(out) < n:
        assert time.monotonic() < deadline, f"{len(out)} of {n} messages"
        for q in queues:
            while not q.empty():
                m = q.get()
                if m.kind in ("telemetry", "event"):
                    out.append(m)
        time.sleep(0.01)
    return out


@pytest.mark.integration
def test_the_listener_takes_a_reported_range_as_accounted_and_still_sees_a_real_gap(
    broker: Broker,
) -> None:
    got: queue.Queue[Message] = queue.Queue()
    listener = Listener(host=broker.host, port=broker.port, on_message=got.put, validate=True)
    listener.start()
    up = uplink(broker)
    try:  # 4..6 lost by the gateway (reported), 9 lost in transit (not reported)
        send(up, [1, 2, 3, 7, 8, 10], [(4, 6)])
        messages = drain([got], 7)
    finally:
        up.close()
        listener.stop()
    assert [m.gap for m in messages if m.gap is not None] == [Gap("telemetry", 9, 9)]
    assert listener.missing("S1", "G1", "telemetry") == [(9, 9)]
    stats = listener.stats
    assert (stats.gaps, stats.missing, stats.accounted, stats.invalid) == (1, 1, 3, 0)


@pytest.mark.integration
def test_members_of_a_shared_group_account_a_report_whichever_member_gets_it(
    broker: Broker,
) -> None:
    central = SharedSeqTracker()
    got: list[queue.Queue[Message]] = [queue.Queue(), queue.Queue()]
    members = [
        Listener(host=broker.host, port=broker.port, on_message=got[i].put, share="fleet",
                 tracker=central, client_id=f"member-{i}")
        for i in range(2)
    ]  # fmt: skip
    for m in members:
        m.start()
    up = uplink(broker)
    telemetry = [s for s in range(1, 61) if not (10 <= s <= 19 or 30 <= s <= 34)]
    try:  # 10..19 and 30..34 reported lost; the reports reach one member each (or the same)
        send(up, telemetry, [(10, 19), (30, 34)])
        messages = drain(got, len(telemetry) + 2)
    finally:
        up.close()
        for m in members:
            m.stop()
    by_member = [m.stats for m in members]
    assert all(s.delivered for s in by_member)  # the broker really split the traffic
    assert central.missing("S1", "G1", "telemetry") == []
    # A jump seen before its report (another member still handling the event) is provisional:
    # whatever was counted missing then is accounted for now.
    assert sum(s.accounted for s in by_member) == 15
    assert sorted(m.envelope.seq for m in messages if m.envelope and m.kind == "telemetry") == (
        telemetry
    )


def test_a_malformed_seq_gap_is_delivered_and_accounts_for_nothing() -> None:
    listener = Listener(host="127.0.0.1", port=1, on_message=print)
    topic = "safeedge/v1/S1/G1/"
    listener.handle(topic + "telemetry", envelope("telemetry", 1, V2))
    bad = [
        event_body("seq_gap", 5, {"stream": "telemetry", "from_seq": "2", "to_seq": 4}),
        event_body("seq_gap", 5, {"stream": "telemetry", "from_seq": 4, "to_seq": 2}),
        event_body("seq_gap", 5, {"stream": "nope", "from_seq": 2, "to_seq": 4}),
        event_body("seq_gap", 5, {"stream": "telemetry", "from_seq": True, "to_seq": 4}),
    ]
    for seq, body in enumerate(bad, start=1):
        assert listener.handle(topic + "event", envelope("event", seq, body)) is not None
    m = listener.handle(topic + "telemetry", envelope("telemetry", 5, V2))
    assert m is not None and m.gap == Gap("telemetry", 2, 4)
    assert listener.stats.accounted == 0
    good = envelope("event", 5, seq_gap(2, 4))
    assert listener.handle(topic + "event", good) is not None
    assert listener.handle(topic + "event", good) is None  # a duplicate report: counted once
    assert (listener.stats.accounted, listener.missing("S1", "G1", "telemetry")) == (3, [])
