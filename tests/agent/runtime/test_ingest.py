"""Ingest with a real RuleEngine and a real Store on tmp_path: alarms before telemetry,
device health events, report-by-exception shaping only telemetry."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from agent.runtime import Components, RuntimeStats
from agent.runtime.alarms import AlarmRecorder
from agent.runtime.alarmstate import AlarmBook
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
    alarms = AlarmRecorder(
        tags=c.tags,
        book=AlarmBook(gateway=c.cfg.gateway.id, tags=c.tags, engine=c.engine),
        sink=sink,
        stats=stats,
    )
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


def test_device_lost_carries_the_drivers_reason_and_restored_the_outage(tmp_path: Path) -> None:
    c = make_components(tmp_path)
    ingest, sink = _ingest(c, RuntimeStats())
    device = c.devices[0]  # a real ModbusDevice (never polled here): its health fields
    ingest.track_device(device.name, True, batch([(0, NOW, 1.0, 0)]), device=device)
    device.lost_reason, device.last_error = "refused", "connect 127.0.0.1:1: refused"  # type: ignore[misc]
    ingest.track_device(device.name, False, batch([]), device=device)
    device.lost_reason, device.last_error, device.last_outage_ms = "", "", 33_000  # type: ignore[misc]
    ingest.track_device(device.name, True, batch([(0, NOW + 9, 1.0, 0)]), device=device)
    events = bodies(sink.store, Stream.EVENT)
    assert [(e["kind"], e.get("reason"), e.get("error"), e.get("outage_ms")) for e in events] == [
        ("device_lost", "refused", "connect 127.0.0.1:1: refused", None),
        ("device_restored", None, None, 33_000),
    ]
    sink.store.close()


def test_an_exact_64_bit_integer_reaches_the_telemetry_record_digit_for_digit(
    tmp_path: Path,
) -> None:
    rbe = "\n[uplink.report_by_exception]\ndeadband = 0.5\nintegrity_s = 3600\n"
    c = make_components(tmp_path, uplink_extra=rbe)
    ingest, sink = _ingest(c, RuntimeStats())
    big = -9007199254740993  # float64 would make it ...992
    first = batch([(0, NOW, 5.0, 0), (1, NOW, float(big), 0)])
    ingest.append_telemetry(dataclasses.replace(first, exact={1: big}))
    second = batch([(0, NOW + 1, 5.0, 0), (1, NOW + 1, float(big + 2), 0)])  # T1 unchanged
    ingest.append_telemetry(dataclasses.replace(second, exact={1: big + 2}))
    raw = [r.payload for r in sink.store.resend(Stream.TELEMETRY, 1, 2)]
    assert b'"T2":-9007199254740993}' in raw[0]  # body v2 (the default)
    assert raw[1].count(b'"T') == 1  # T1 dropped by report-by-exception: the position moved
    assert raw[1] == b'{"t0":1700000000001,"at":[[0,{"T2":-9007199254740991}]]}'
    sink.store.close()


def test_an_exact_64_bit_integer_reaches_a_body_v1_record_too(tmp_path: Path) -> None:
    c = make_components(tmp_path, uplink_extra="telemetry_body = 1\n")
    ingest, sink = _ingest(c, RuntimeStats())
    big = 2**64 - 1  # uint64 maximum
    ingest.append_telemetry(dataclasses.replace(batch([(1, NOW, float(big), 0)]), exact={0: big}))
    (raw,) = [r.payload for r in sink.store.resend(Stream.TELEMETRY, 1, 1)]
    assert raw == b'{"points":[["T2",1700000000000,18446744073709551615]]}'


def test_each_poll_is_one_store_transaction_and_alarm_observers_see_it_committed(
    tmp_path: Path,
) -> None:
    c = make_components(tmp_path)
    ingest, sink = _ingest(c, RuntimeStats())
    seen: list[int] = []  # the alarm stream's last seq when the observers are told
    ingest._alarms.observers.append(
        lambda events: seen.append(sink.store.stats().streams[Stream.ALARM].last_seq)
    )
    device = c.devices[0]  # never polled: offline, so the first poll also says device_lost
    commits = []
    for i, value in enumerate([50.0, 90.0, 50.0]):  # raise "high", then clear it
        before = sink.store.commits
        ingest.on_batch(device, batch([(0, NOW + i * 1000, value, 0), (1, NOW, 1.0, 0)]))
        commits.append(sink.store.commits - before)
    assert commits == [1, 1, 1]
    assert [a["event"] for a in bodies(sink.store, Stream.ALARM)] == ["raise", "clear"]
    assert len(bodies(sink.store, Stream.TELEMETRY)) == 3
    assert [e["kind"] for e in bodies(sink.store, Stream.EVENT)] == ["device_lost"]
    assert sink.order == [Stream.EVENT, Stream.TELEMETRY, *[Stream.ALARM, Stream.TELEMETRY] * 2]
    assert seen == [1, 2]  # after the poll's commit, never before
    sink.store.close()
