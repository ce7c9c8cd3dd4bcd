"""Settling marks records delivered in place: the sealed payload is not written again, and the
delivery time of each run of records is kept in ``settled`` (read back by StoreReader)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from buffer import Store, StoreReader, Stream
from tests.buffer.conftest import Clock, OpenStore


def payloads(n: int) -> list[bytes]:
    return [os.urandom(12_000) for _ in range(n)]  # incompressible: stored raw, 12 KB each


def reader(tmp_path: Path) -> StoreReader:
    return StoreReader.open(
        path=tmp_path / "data" / "buffer.db",
        key_file=tmp_path / "secrets" / "buffer.key",
        gateway_id="gw-01",
    )


def test_settling_does_not_write_the_sealed_payloads_again(
    open_store: OpenStore, tmp_path: Path
) -> None:
    store = open_store()
    store.append(Stream.TELEMETRY, payloads(200))
    leased = store.lease(max_count=200, max_bytes=1 << 30)
    wal = tmp_path / "data" / "buffer.db-wal"
    before = wal.stat().st_size
    store.settle(accepted=[(r.stream, r.seq) for r in leased])
    grown = wal.stat().st_size - before
    # Rewriting 200 records of 12 KB would add ≥ 2.4 MB of WAL (their overflow pages); in
    # place it is one leaf page per record and the indexes.
    assert grown < 200 * 12_000 // 2, grown
    assert store.stats().streams[Stream.TELEMETRY].delivered == 200


def test_delivery_times_are_read_back_per_run_and_dead_letters_keep_theirs(
    open_store: OpenStore, tmp_path: Path, clock: Clock
) -> None:
    store = open_store()
    store.append(Stream.TELEMETRY, [b"a", b"b", b"c", b"d", b"e"])
    store.lease(max_count=10, max_bytes=1 << 20)
    t1 = clock()
    store.settle(accepted=[(Stream.TELEMETRY, 1), (Stream.TELEMETRY, 2)])
    clock.advance(5_000)
    store.settle(
        accepted=[(Stream.TELEMETRY, 4)], rejected=[(Stream.TELEMETRY, 5, "not authorized")]
    )
    store.close()
    with reader(tmp_path) as r:
        got = [(x.seq, x.state, x.settled_ms, x.reason) for x in r.records()]
    assert got == [
        (1, "delivered", t1, None),
        (2, "delivered", t1, None),
        (3, "undelivered", None, None),
        (4, "delivered", t1 + 5_000, None),
        (5, "dead", t1 + 5_000, "not authorized"),
    ]


def test_runs_below_the_oldest_retained_record_are_pruned_when_settling(
    open_store: OpenStore, tmp_path: Path
) -> None:
    store = open_store()
    store.append(Stream.TELEMETRY, [b"x"] * 6)
    store.lease(max_count=10, max_bytes=1 << 20)
    store.settle(accepted=[(Stream.TELEMETRY, 1), (Stream.TELEMETRY, 2)])
    db = sqlite3.connect(tmp_path / "data" / "buffer.db", isolation_level=None)
    try:
        db.execute("DELETE FROM records WHERE seq <= 3")  # as retention would
        store.settle(accepted=[(Stream.TELEMETRY, 5)])
        runs = db.execute("SELECT first_seq, last_seq FROM settled ORDER BY last_seq").fetchall()
    finally:
        db.close()
    assert runs == [(5, 5)]


def test_an_older_file_without_the_settled_table_gets_it_when_opened(
    open_store: OpenStore, tmp_path: Path
) -> None:
    open_store().close()
    db = sqlite3.connect(tmp_path / "data" / "buffer.db", isolation_level=None)
    db.execute("DROP TABLE settled")
    db.close()
    with reader(tmp_path) as r:  # read-only: an older file reads as it is
        assert list(r.records()) == []
    store: Store = open_store()
    store.append(Stream.ALARM, [b"{}"])
    store.lease(max_count=1, max_bytes=100)
    store.settle(accepted=[(Stream.ALARM, 1)])
    assert store.stats().streams[Stream.ALARM].delivered == 1
