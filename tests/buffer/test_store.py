"""The Store API: seqs, leasing order and bounds, settling, resend, stats, lifecycle."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import sqlite_utils

from buffer import (
    BufferClosedError,
    BufferInUseError,
    BufferMismatchError,
    Record,
    Store,
    Stream,
    record_id,
)
from tests.buffer.conftest import T0_MS, Clock, OpenStore


def keys(records: list[Record]) -> list[tuple[Stream, int]]:
    return [(r.stream, r.seq) for r in records]


def test_seqs_start_at_one_per_stream_and_are_consecutive(open_store: OpenStore) -> None:
    store = open_store()
    assert store.append(Stream.TELEMETRY, [b"a", b"b", b"c"]) == [1, 2, 3]
    assert store.append(Stream.ALARM, [b"x"]) == [1]
    assert store.append(Stream.TELEMETRY, [b"d"]) == [4]
    assert store.append(Stream.EVENT, []) == []
    assert store.stats().streams[Stream.EVENT].last_seq == 0


def test_seqs_persist_across_reopen_and_are_not_reused_after_records_are_gone(
    open_store: OpenStore, clock: Clock
) -> None:
    store = open_store(retention_days=1.0)
    store.append(Stream.TELEMETRY, [b"a", b"b"])
    store.settle(accepted=[(Stream.TELEMETRY, 1), (Stream.TELEMETRY, 2)])
    store.close()
    clock.advance(2 * 86_400_000)
    store = open_store(retention_days=1.0)
    store.maintain()
    assert store.resend(Stream.TELEMETRY, 1, 10) == []
    store.rotate_key()
    assert store.append(Stream.TELEMETRY, [b"c"]) == [3]


def test_append_uses_the_clock_unless_created_ms_is_given(
    open_store: OpenStore, clock: Clock
) -> None:
    store = open_store()
    store.append(Stream.EVENT, [b"now"])
    store.append(Stream.EVENT, [b"then"], created_ms=T0_MS - 5)
    assert [r.created_ms for r in store.resend(Stream.EVENT, 1, 2)] == [T0_MS, T0_MS - 5]


def test_lease_hands_out_alarms_then_events_then_telemetry_fifo_within_each(
    open_store: OpenStore,
) -> None:
    store = open_store()
    store.append(Stream.TELEMETRY, [b"t1", b"t2"])
    store.append(Stream.EVENT, [b"e1"])
    store.append(Stream.ALARM, [b"a1", b"a2"])
    store.append(Stream.TELEMETRY, [b"t3"])
    got = store.lease(max_count=100, max_bytes=1 << 20)
    assert [r.payload for r in got] == [b"a1", b"a2", b"e1", b"t1", b"t2", b"t3"]


def test_lease_stops_at_max_count(open_store: OpenStore) -> None:
    store = open_store()
    store.append(Stream.TELEMETRY, [b"%d" % i for i in range(10)])
    assert [r.seq for r in store.lease(max_count=3, max_bytes=1 << 20)] == [1, 2, 3]
    assert [r.seq for r in store.lease(max_count=3, max_bytes=1 << 20)] == [4, 5, 6]


def test_lease_stops_before_max_bytes_would_be_exceeded(open_store: OpenStore) -> None:
    store = open_store()
    store.append(Stream.TELEMETRY, [b"x" * 40, b"y" * 40, b"z" * 40])
    assert [r.seq for r in store.lease(max_count=10, max_bytes=100)] == [1, 2]
    assert [r.seq for r in store.lease(max_count=10, max_bytes=80)] == [3]


def test_lease_returns_one_record_even_if_it_alone_exceeds_max_bytes(
    open_store: OpenStore,
) -> None:
    store = open_store()
    store.append(Stream.ALARM, [b"x" * 500, b"y"])
    got = store.lease(max_count=10, max_bytes=10)
    assert [(r.seq, len(r.payload)) for r in got] == [(1, 500)]


def test_lease_on_an_empty_store_returns_nothing(open_store: OpenStore) -> None:
    assert open_store().lease(max_count=5, max_bytes=100) == []


def test_lease_rejects_non_positive_bounds(open_store: OpenStore) -> None:
    store = open_store()
    with pytest.raises(ValueError, match="positive"):
        store.lease(max_count=0, max_bytes=100)


def test_lease_with_live_since_puts_fresh_telemetry_after_alarms_and_events_before_backlog(
    open_store: OpenStore, clock: Clock
) -> None:
    store = open_store()
    store.append(Stream.TELEMETRY, [b"old1", b"old2"], created_ms=T0_MS - 60_000)
    store.append(Stream.TELEMETRY, [b"old3"], created_ms=T0_MS - 10_001)
    store.append(Stream.TELEMETRY, [b"edge"], created_ms=T0_MS - 10_000)  # at the bound: live
    store.append(Stream.TELEMETRY, [b"new"])
    store.append(Stream.EVENT, [b"ev"], created_ms=T0_MS - 60_000)
    store.append(Stream.ALARM, [b"al"], created_ms=T0_MS - 60_000)
    got = store.lease(max_count=3, max_bytes=1 << 20, live_since_ms=T0_MS - 10_000)
    assert [r.payload for r in got] == [b"al", b"ev", b"edge"]
    got = store.lease(max_count=10, max_bytes=1 << 20, live_since_ms=T0_MS - 10_000)
    assert [r.payload for r in got] == [b"new", b"old1", b"old2", b"old3"]


def test_live_telemetry_is_leased_by_seq_even_when_the_clock_went_backwards(
    open_store: OpenStore,
) -> None:
    store = open_store()
    store.append(Stream.TELEMETRY, [b"backlog"], created_ms=T0_MS - 3_600_000)
    store.append(Stream.TELEMETRY, [b"a"], created_ms=T0_MS + 500)
    store.append(Stream.TELEMETRY, [b"b"], created_ms=T0_MS)  # clock stepped back 0.5 s
    store.append(Stream.TELEMETRY, [b"c"], created_ms=T0_MS + 100)
    got = store.lease(max_count=10, max_bytes=1 << 20, live_since_ms=T0_MS - 10_000)
    assert [(r.seq, r.payload) for r in got] == [(2, b"a"), (3, b"b"), (4, b"c"), (1, b"backlog")]


def test_live_first_leases_skip_leased_records_and_stop_at_max_bytes(
    open_store: OpenStore,
) -> None:
    store = open_store()
    store.append(Stream.TELEMETRY, [b"o" * 10] * 3, created_ms=T0_MS - 60_000)
    store.append(Stream.TELEMETRY, [b"n" * 10] * 3)
    live = T0_MS - 1_000
    assert keys(store.lease(max_count=2, max_bytes=100, live_since_ms=live)) == [
        (Stream.TELEMETRY, 4),
        (Stream.TELEMETRY, 5),
    ]
    got = store.lease(max_count=10, max_bytes=25, live_since_ms=live)  # 10 + 10, not 30
    assert keys(got) == [(Stream.TELEMETRY, 6), (Stream.TELEMETRY, 1)]
    store.release([(Stream.TELEMETRY, 5)])
    assert [r.seq for r in store.lease(max_count=10, max_bytes=100, live_since_ms=live)] == [
        5,
        2,
        3,
    ]


def test_leased_records_are_not_leased_again_until_released(open_store: OpenStore) -> None:
    store = open_store()
    store.append(Stream.EVENT, [b"a", b"b", b"c"])
    first = store.lease(max_count=2, max_bytes=1 << 20)
    assert [r.seq for r in first] == [1, 2]
    assert [r.seq for r in store.lease(max_count=5, max_bytes=1 << 20)] == [3]
    assert store.lease(max_count=5, max_bytes=1 << 20) == []
    store.release([(Stream.EVENT, 2)])
    assert [r.seq for r in store.lease(max_count=5, max_bytes=1 << 20)] == [2]
    store.release_all()
    assert [r.seq for r in store.lease(max_count=5, max_bytes=1 << 20)] == [1, 2, 3]


def test_leases_do_not_survive_a_reopen(open_store: OpenStore) -> None:
    store = open_store()
    store.append(Stream.ALARM, [b"a"])
    assert len(store.lease(max_count=5, max_bytes=100)) == 1
    store.close()
    assert keys(open_store().lease(max_count=5, max_bytes=100)) == [(Stream.ALARM, 1)]


def test_accepted_records_are_kept_as_delivered_and_never_leased_again(
    open_store: OpenStore,
) -> None:
    store = open_store()
    store.append(Stream.TELEMETRY, [b"a", b"b"])
    store.settle(accepted=keys(store.lease(max_count=1, max_bytes=100)))
    store.release_all()
    assert [r.seq for r in store.lease(max_count=5, max_bytes=100)] == [2]
    stats = store.stats().streams[Stream.TELEMETRY]
    assert (stats.delivered, stats.undelivered, stats.leased) == (1, 1, 1)
    assert [r.payload for r in store.resend(Stream.TELEMETRY, 1, 1)] == [b"a"]


def test_rejected_records_are_dead_lettered_with_their_reason_and_counted(
    open_store: OpenStore, tmp_path: Path
) -> None:
    store = open_store()
    store.append(Stream.EVENT, [b"a", b"b"])
    store.lease(max_count=5, max_bytes=100)
    store.settle(
        accepted=[(Stream.EVENT, 2)],
        rejected=[(Stream.EVENT, 1, "0x87 not authorized"), (Stream.EVENT, 99, "unknown")],
    )
    stats = store.stats().streams[Stream.EVENT]
    assert (stats.dead, stats.dead_total, stats.delivered, stats.leased) == (1, 1, 1, 0)
    store.release_all()
    assert store.lease(max_count=5, max_bytes=100) == []
    store.close()
    db = sqlite_utils.Database(tmp_path / "data" / "buffer.db")
    assert [r["reason"] for r in db["records"].rows_where("state = 2")] == ["0x87 not authorized"]


def test_settling_twice_does_not_change_a_settled_record(open_store: OpenStore) -> None:
    store = open_store()
    store.append(Stream.ALARM, [b"a"])
    store.settle(accepted=[(Stream.ALARM, 1)])
    store.settle(rejected=[(Stream.ALARM, 1, "late reject")])
    stats = store.stats().streams[Stream.ALARM]
    assert (stats.delivered, stats.dead, stats.dead_total) == (1, 0, 0)


def test_resend_returns_retained_records_in_range_whatever_their_state(
    open_store: OpenStore,
) -> None:
    store = open_store()
    store.append(Stream.TELEMETRY, [b"1", b"2", b"3", b"4"])
    store.lease(max_count=1, max_bytes=100)
    store.settle(accepted=[(Stream.TELEMETRY, 2)])
    got = store.resend(Stream.TELEMETRY, 1, 3)
    assert [(r.seq, r.payload) for r in got] == [(1, b"1"), (2, b"2"), (3, b"3")]
    assert store.resend(Stream.ALARM, 1, 3) == []
    # resend does not lease: seq 3 is still available
    assert [r.seq for r in store.lease(max_count=5, max_bytes=100)] == [3, 4]


def test_stats_count_bytes_and_the_oldest_undelivered_record(
    open_store: OpenStore, clock: Clock
) -> None:
    store = open_store()
    store.append(Stream.TELEMETRY, [b"a"])
    clock.advance(1000)
    store.append(Stream.TELEMETRY, [b"b"])
    store.settle(accepted=[(Stream.TELEMETRY, 1)])
    stats = store.stats()
    tel = stats.streams[Stream.TELEMETRY]
    assert tel.oldest_undelivered_ms == T0_MS + 1000
    assert tel.bytes == stats.bytes > 0
    assert stats.streams[Stream.ALARM].oldest_undelivered_ms is None
    assert stats.active_key_id == 1
    assert stats.key_ids == (1,)


def test_record_ids_name_gateway_stream_and_seq() -> None:
    assert record_id("gw-01", Stream.ALARM, 7) == "gw-01/alarm/7"
    assert record_id("gw-01", Stream.TELEMETRY, 1) == "gw-01/telemetry/1"


def test_open_creates_parent_directories_database_in_wal_and_key_file(
    open_store: OpenStore, tmp_path: Path
) -> None:
    open_store().close()
    db = sqlite_utils.Database(tmp_path / "data" / "buffer.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert {"records", "streams", "keys", "meta", "quarantine"} <= set(db.table_names())
    assert (tmp_path / "secrets" / "buffer.key").is_file()


def test_a_second_open_of_the_same_buffer_is_refused_while_the_first_is_open(
    open_store: OpenStore,
) -> None:
    first = open_store()
    with pytest.raises(BufferInUseError):
        open_store()
    first.close()
    open_store().close()


def test_a_buffer_of_another_gateway_is_refused(open_store: OpenStore) -> None:
    open_store().close()
    with pytest.raises(BufferMismatchError, match="gw-01"):
        open_store(gateway_id="gw-02")


def test_a_closed_store_refuses_use_and_closes_twice_quietly(open_store: OpenStore) -> None:
    store = open_store()
    store.close()
    store.close()
    with pytest.raises(BufferClosedError):
        store.append(Stream.ALARM, [b"a"])


def test_the_store_works_as_a_context_manager(tmp_path: Path, clock: Clock) -> None:
    with Store.open(
        path=tmp_path / "b.db", key_file=tmp_path / "k", gateway_id="g", clock_ms=clock
    ) as store:
        store.append(Stream.ALARM, [b"a"])
    with pytest.raises(BufferClosedError):
        store.stats()
    assert os.path.exists(tmp_path / "b.db")


def test_streams_are_numbered_as_the_schema_literals_assume() -> None:
    # store.py and schema.py spell these values as SQL literals (partial indexes need them).
    assert [int(s) for s in Stream] == [0, 1, 2, 3]
    assert Stream.TELEMETRY == 2
