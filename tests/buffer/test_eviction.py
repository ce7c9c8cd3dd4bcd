"""Capacity and retention: delivered first, then oldest undelivered telemetry; never alarms or
events; every undelivered drop counted and reported with its time span."""

from __future__ import annotations

import os

from buffer import Eviction, Stream
from tests.buffer.conftest import T0_MS, Clock, OpenStore

DAY_MS = 86_400_000


def blob() -> bytes:
    return os.urandom(100)  # incompressible: every record has the same accounted size


def record_size(open_store: OpenStore) -> int:
    """The accounted size of one ``blob()`` record: nonce + codec byte, body, tag + overhead
    (checked against the store by the first test)."""
    return 12 + (1 + 100 + 16) + 64


def test_record_size_helper_matches_the_store(open_store: OpenStore) -> None:
    store = open_store()
    store.append(Stream.TELEMETRY, [blob()])
    assert store.stats().bytes == record_size(open_store)


def test_over_capacity_the_oldest_undelivered_telemetry_is_evicted_and_reported(
    open_store: OpenStore, clock: Clock
) -> None:
    size = record_size(open_store)
    store = open_store(capacity_bytes=5 * size)
    for _ in range(5):
        store.append(Stream.TELEMETRY, [blob()])
        clock.advance(1000)
    assert store.take_evictions() == []
    assert store.append(Stream.TELEMETRY, [blob(), blob()]) == [6, 7]
    assert [r.seq for r in store.resend(Stream.TELEMETRY, 1, 10)] == [3, 4, 5, 6, 7]
    assert store.take_evictions() == [
        Eviction(Stream.TELEMETRY, 2, T0_MS, T0_MS + 1000, "capacity")
    ]
    assert store.take_evictions() == []
    stats = store.stats()
    assert stats.bytes <= stats.capacity_bytes
    assert stats.streams[Stream.TELEMETRY].evicted == 2


def test_delivered_records_go_before_any_undelivered_one_even_delivered_alarms(
    open_store: OpenStore, clock: Clock
) -> None:
    size = record_size(open_store)
    store = open_store(capacity_bytes=4 * size)
    store.append(Stream.TELEMETRY, [blob()])  # oldest, undelivered
    clock.advance(1000)
    store.append(Stream.ALARM, [blob(), blob()])
    store.settle(accepted=[(Stream.ALARM, 1), (Stream.ALARM, 2)])
    clock.advance(1000)
    store.append(Stream.TELEMETRY, [blob()])
    store.append(Stream.TELEMETRY, [blob()])
    assert store.resend(Stream.ALARM, 1, 2)[0].seq == 2  # alarm 1 (delivered) made room
    assert store.take_evictions() == []  # a delivered record leaving is not a drop
    assert [r.seq for r in store.resend(Stream.TELEMETRY, 1, 9)] == [1, 2, 3]


def test_undelivered_alarms_and_events_are_never_evicted_even_over_capacity(
    open_store: OpenStore,
) -> None:
    size = record_size(open_store)
    store = open_store(capacity_bytes=3 * size)
    store.append(Stream.ALARM, [blob(), blob()])
    store.append(Stream.EVENT, [blob()])
    store.append(Stream.TELEMETRY, [blob()])
    store.append(Stream.ALARM, [blob()])
    stats = store.stats()
    assert stats.streams[Stream.ALARM].undelivered == 3
    assert stats.streams[Stream.EVENT].undelivered == 1
    assert stats.streams[Stream.TELEMETRY].evicted == 1
    assert stats.bytes == 4 * size > stats.capacity_bytes
    assert [e.count for e in store.take_evictions()] == [1]


def test_an_evicted_leased_record_is_no_longer_leased_and_settling_it_is_harmless(
    open_store: OpenStore,
) -> None:
    size = record_size(open_store)
    store = open_store(capacity_bytes=2 * size)
    store.append(Stream.TELEMETRY, [blob(), blob()])
    assert len(store.lease(max_count=5, max_bytes=1 << 20)) == 2
    store.append(Stream.TELEMETRY, [blob()])
    assert store.stats().streams[Stream.TELEMETRY].leased == 1
    store.settle(accepted=[(Stream.TELEMETRY, 1), (Stream.TELEMETRY, 2)])
    stats = store.stats().streams[Stream.TELEMETRY]
    assert (stats.delivered, stats.undelivered, stats.evicted, stats.leased) == (1, 1, 1, 0)


def test_eviction_totals_survive_a_reopen(open_store: OpenStore) -> None:
    size = record_size(open_store)
    store = open_store(capacity_bytes=size)
    store.append(Stream.TELEMETRY, [blob()])
    store.append(Stream.TELEMETRY, [blob()])
    store.close()
    stats = open_store(capacity_bytes=size).stats()
    assert stats.streams[Stream.TELEMETRY].evicted == 1
    assert stats.bytes == size


def test_retention_removes_old_delivered_and_dead_records_without_reporting_a_drop(
    open_store: OpenStore, clock: Clock
) -> None:
    store = open_store(retention_days=30.0)
    store.append(Stream.ALARM, [b"a1", b"a2"])
    store.settle(accepted=[(Stream.ALARM, 1)], rejected=[(Stream.ALARM, 2, "denied")])
    clock.advance(29 * DAY_MS)
    store.maintain()
    assert len(store.resend(Stream.ALARM, 1, 2)) == 2  # the local record: 30 days
    clock.advance(2 * DAY_MS)
    store.maintain()
    assert store.resend(Stream.ALARM, 1, 2) == []
    assert store.take_evictions() == []
    stats = store.stats()
    assert stats.bytes == 0
    assert stats.streams[Stream.ALARM].dead_total == 1


def test_retention_evicts_old_undelivered_telemetry_counted_but_keeps_alarms_and_events(
    open_store: OpenStore, clock: Clock
) -> None:
    store = open_store(retention_days=1.0)
    store.append(Stream.TELEMETRY, [b"t1", b"t2"])
    store.append(Stream.ALARM, [b"a"])
    store.append(Stream.EVENT, [b"e"])
    clock.advance(DAY_MS // 2)
    store.append(Stream.TELEMETRY, [b"t3"])
    clock.advance(DAY_MS // 2 + 1)
    store.maintain()
    assert [r.payload for r in store.lease(max_count=10, max_bytes=1000)] == [b"a", b"e", b"t3"]
    assert store.take_evictions() == [Eviction(Stream.TELEMETRY, 2, T0_MS, T0_MS, "retention")]
    assert store.stats().streams[Stream.TELEMETRY].evicted == 2


def test_maintain_enforces_a_capacity_lowered_since_the_last_run(
    open_store: OpenStore, clock: Clock
) -> None:
    size = record_size(open_store)
    store = open_store()
    for _ in range(4):
        store.append(Stream.TELEMETRY, [blob()])
        clock.advance(10)
    store.close()
    store = open_store(capacity_bytes=2 * size)
    store.maintain()
    assert [r.seq for r in store.resend(Stream.TELEMETRY, 1, 4)] == [3, 4]
    assert store.take_evictions() == [Eviction(Stream.TELEMETRY, 2, T0_MS, T0_MS + 10, "capacity")]


def test_retention_works_through_many_chunks(open_store: OpenStore, clock: Clock) -> None:
    store = open_store(retention_days=1.0)
    store.append(Stream.TELEMETRY, [b"%d" % i for i in range(1300)])
    clock.advance(DAY_MS + 1)
    store.append(Stream.TELEMETRY, [b"new"])
    store.maintain()
    assert [r.payload for r in store.lease(max_count=10, max_bytes=1000)] == [b"new"]
    assert [e.count for e in store.take_evictions()] == [1300]


def test_local_incident_records_go_after_their_retention_and_undelivered_alarms_stay(
    open_store: OpenStore, clock: Clock
) -> None:
    store = open_store(retention_days=30.0)
    store.append(Stream.INCIDENT, [b"window-1"])
    store.append(Stream.ALARM, [b"a"])
    clock.advance(29 * DAY_MS)
    store.maintain()
    assert store.stats().streams[Stream.INCIDENT].undelivered == 1  # still the local record
    clock.advance(2 * DAY_MS)
    store.maintain()
    assert store.stats().streams[Stream.INCIDENT].undelivered == 0
    assert store.take_evictions() == []  # the end of its retention, not a drop
    assert [r.payload for r in store.lease(max_count=10, max_bytes=1000)] == [b"a"]
