"""Ingest with a real RuleEngine and a real Store on tmp_path: alarms before telemetry,
device health events, report-by-exception shaping only telemetry."""

from __future__ import annotations

import math
from pathlib import Path

from agent.runtime import Components, RuntimeStats
from agent.runtime.alarms import AlarmRecorder
from agent.runtime.build import open_store
from agent.runtime.ingest import Ingest
from buffer.record import Stream
from tests.agent.runtime.conftest import NOW, make_components
from tests.agent.runtime.helpers import OrderedSink, batch, bodies
from tests.support.telemetry import points_of


def _ingest(c: Components, stats: RuntimeStats) -> tuple[Ingest, OrderedSink]:
    c.paths.data_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(c)
    sink = OrderedSink(store=store, stats=stats, clock_ms=c.clock_ms, wake=c.bridge.wake)
    alarms = AlarmRecorder(tags=c.tags, alarm_ids=c.alarm_ids, sink=sink, stats=stats)
    ingest = Ingest(
        engine=c.engine,
        alarms=alarms,
        shaper=c.shaper,
        sink=sink,
        stats=stats,
        clock_ms=c.clock_ms,
    )
    return ingest, sink


def test_a_poll_appends_its_alarm_records_before_its_telemetry(tmp_path: Path) -> None:
    c = make_components(tmp_path)
    stats = RuntimeStats()
    ingest, sink = _ingest(c, stats)
    device = c.devices[0]
    ingest.on_batch(device, batch([(0, NOW, 50.0, 0), (1, NOW, 1.0, 0)]))
    ingest.on_batch(device, batch([(0, NOW + 1000, 90.0, 0), (1, NOW + 1000, math.nan, 1)]))
    alarm_at = sink.order.index(Stream.ALARM)
    assert sink.order[alarm_at + 1] == Stream.TELEMETRY
    [alarm] = bodies(sink.store, Stream.ALARM)
    assert (alarm["tag"], alarm["alarm"], alarm["event"]) == ("T1", "high", "raise")
    points = [p for b in bodies(sink.store, Stream.TELEMETRY) for p in points_of(b)]
    assert points[-2:] == [["T1", NOW + 1000, 90.0], ["T2", NOW + 1000, None, "bad_comm"]]
    assert (stats.polls, stats.samples, stats.alarms) == (2, 4, 1)
    sink.store.close()


def test_device_lost_and_restored_are_events_but_not_before_anything_is_known(
    tmp_path: Path,
) -> None:
    c = make_components(tmp_path)
    ingest, sink = _ingest(c, RuntimeStats())
    empty = batch([])
    ingest.track_device("push", False, empty)  # a push device before its first period
    ingest.track_device("plc", True, empty)
    ingest.track_device("plc", True, empty)
    ingest.track_device("plc", False, empty)
    ingest.track_device("plc", True, batch([(0, NOW + 5, 1.0, 0)]))
    kinds = [(e["kind"], e["device"], e["at_ms"]) for e in bodies(sink.store, Stream.EVENT)]
    assert kinds == [("device_lost", "plc", NOW), ("device_restored", "plc", NOW + 5)]
    sink.store.close()


def test_report_by_exception_drops_telemetry_but_never_alarms(tmp_path: Path) -> None:
    rbe = "\n[uplink.report_by_exception]\ndeadband = 5.0\nintegrity_s = 3600\n"
    c = make_components(tmp_path, uplink_extra=rbe)
    stats = RuntimeStats()
    ingest, sink = _ingest(c, stats)
    for i, v in enumerate([79.0, 79.5, 81.0]):  # 81 raises "high", within the deadband
        ingest.on_batch(c.devices[0], batch([(0, NOW + i * 1000, v, 0)]))
    points = [p for b in bodies(sink.store, Stream.TELEMETRY) for p in points_of(b)]
    assert points == [["T1", NOW, 79.0]]
    assert [a["event"] for a in bodies(sink.store, Stream.ALARM)] == ["raise"]
    sink.store.close()


def test_lingering_telemetry_is_held_and_flushed(tmp_path: Path) -> None:
    c = make_components(tmp_path, uplink_extra="telemetry_linger_ms = 60000\n")
    ingest, sink = _ingest(c, RuntimeStats())
    assert ingest.lingers
    ingest.append_telemetry(batch([(1, NOW, 1.0, 0)]))
    ingest.append_telemetry(batch([(1, NOW + 1, 2.0, 0)]))
    assert bodies(sink.store, Stream.TELEMETRY) == []
    ingest.flush()
    [body] = bodies(sink.store, Stream.TELEMETRY)
    assert points_of(body) == [["T2", NOW, 1.0], ["T2", NOW + 1, 2.0]]
    sink.store.close()
