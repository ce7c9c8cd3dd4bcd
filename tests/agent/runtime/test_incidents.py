"""The incident recorder in the runtime: Ingest feeds it every batch (report-by-exception on),
an operator's acknowledgement reaches it through the command actions, and shutdown closes what
is open; its records go to the real store's incident stream."""

from __future__ import annotations

from pathlib import Path

from agent.commands import AckAlarmArgs
from agent.review.incident import incidents_from
from agent.runtime import RuntimeStats
from agent.runtime.actions import CommandActions
from agent.runtime.alarms import AlarmRecorder
from agent.runtime.alarmstate import AlarmBook
from agent.runtime.build import forwarder, open_store
from agent.runtime.forwarding import Forwarding
from agent.runtime.incidents import IncidentTap
from agent.runtime.ingest import Ingest
from agent.runtime.sink import RecordSink
from buffer.record import Stream
from tests.agent.runtime.conftest import NOW, make_components
from tests.agent.runtime.helpers import batch, bodies
from tests.support.telemetry import points_of

EXTRA = """high_high = 90.0

[review.recorder]
pre_s = 5.0
post_s = 2.0
"""
RBE = "\n[uplink.report_by_exception]\ndeadband = 1000.0\nintegrity_s = 3600.0\n"


def test_ingest_and_acks_feed_the_recorder_and_shutdown_closes_the_incident(tmp_path: Path) -> None:
    c = make_components(tmp_path, uplink=True, uplink_extra=RBE, extra=EXTRA)
    assert c.incidents is not None and c.shaper.rbe is not None
    c.paths.data_dir.mkdir(parents=True)
    store = open_store(c)
    stats = RuntimeStats()
    sink = RecordSink(store=store, stats=stats, clock_ms=c.clock_ms, wake=c.bridge.wake)
    book = AlarmBook(gateway=c.cfg.gateway.id, tags=c.tags, engine=c.engine)
    alarms = AlarmRecorder(tags=c.tags, book=book, sink=sink, stats=stats)
    tap = IncidentTap(recorder=c.incidents, sink=sink)
    ingest = Ingest(
        engine=c.engine,
        alarms=alarms,
        shaper=c.shaper,
        sink=sink,
        stats=stats,
        clock_ms=c.clock_ms,
        incidents=tap,
    )
    assert c.uplink is not None
    actions = CommandActions(
        tag_index=c.tags.index,
        engine=c.engine,
        alarms=alarms,
        store=store,
        forwarder=forwarder(c, store=store, uplink=c.uplink),
        uplink=c.uplink,
        max_resend=5,
        clock_ms=c.clock_ms,
        incidents=tap,
    )
    device = c.devices[0]
    for s in range(10):  # T1 climbs 50 → 95: level 2 at s = 8 (90)
        ingest.on_batch(
            device, batch([(0, NOW + s * 1000, 50.0 + 5 * s, 0), (1, NOW + s * 1000, 7.0, 0)])
        )
    assert actions.ack_alarm(AckAlarmArgs(tag="T1", user="op-li")).startswith("T1: high ack")
    ingest.flush()
    store.close()
    with open_store(c) as again:
        (inc,) = incidents_from(bodies(again, Stream.INCIDENT))
        telemetry = [p for b in bodies(again, Stream.TELEMETRY) for p in points_of(b)]
    assert inc.tags == ["T1", "T2"] and inc.reason == "stopped"
    assert inc.trigger == {
        "tag": "T1",
        "alarm": "high",
        "event": "escalate",
        "level": 2,
        "value": 90.0,
    }
    assert sorted(p.ts for p in inc.points if p.tag == "T1") == [
        NOW + s * 1000 for s in range(3, 10)
    ]
    assert [p[0] for p in telemetry] == ["T1", "T2"]  # report-by-exception kept the first only
    assert [(e["event"], e.get("user")) for e in inc.events] == [
        ("escalate", None),
        ("ack", "op-li"),
    ]
    assert inc.limits["T1"] == {"high": 80.0, "high_high": 90.0}


def test_the_recorder_can_be_switched_off(tmp_path: Path) -> None:
    c = make_components(tmp_path, extra="\n[review.recorder]\nenabled = false\n")
    assert c.incidents is None


def test_incident_records_do_not_hold_shutdown_waiting_for_a_delivery_that_never_comes(
    tmp_path: Path,
) -> None:
    c = make_components(tmp_path, uplink=True)
    c.paths.data_dir.mkdir(parents=True)
    assert c.uplink is not None
    with open_store(c) as store:
        fwd = Forwarding(
            forwarder=forwarder(c, store=store, uplink=c.uplink),
            uplink=c.uplink,
            store=store,
            flush_timeout_s=5.0,
        )
        store.append(Stream.INCIDENT, [b'{"type": "close"}'])
        assert not fwd.has_undelivered()  # never leased: nothing for the uplink to wait for
        store.append(Stream.EVENT, [b'{"kind": "x", "ts": 1}'])
        assert fwd.has_undelivered()
    assert [s.wire_name for s in Stream if not s.forwarded] == ["incident"]
