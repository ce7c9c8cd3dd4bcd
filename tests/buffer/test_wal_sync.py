"""A WAL sync run off the store's thread: what it covers, and when records may be leased.

``Store.begin_sync`` snapshots the commits made so far; only after its fsync returned and
``end_sync`` took it back may ``lease(sync=False)`` hand those records out. A commit made while
the fsync runs is not covered: it waits for the next sync (a power cut in between would roll
it back, and it must not have reached the platform).
"""

from __future__ import annotations

import threading

from buffer import Record, Store, Stream
from tests.buffer.conftest import OpenStore


def seqs(records: list[Record]) -> list[int]:
    return [r.seq for r in records]


def sync_now(store: Store) -> None:
    """What the forwarder does, on this thread (the first sync after an open may be inline)."""
    pending = store.begin_sync()
    if pending is not None:
        pending.run()
        store.end_sync(pending)


def test_a_lease_without_sync_hands_out_only_what_a_finished_sync_covered(
    open_store: OpenStore,
) -> None:
    store = open_store()
    store.append(Stream.TELEMETRY, [b"a"])
    assert store.lease(max_count=10, max_bytes=1 << 20, sync=False) == []  # not durable yet
    sync_now(store)
    assert seqs(store.lease(max_count=10, max_bytes=1 << 20, sync=False)) == [1]

    store.append(Stream.TELEMETRY, [b"b"])
    pending = store.begin_sync()
    assert pending is not None
    store.append(Stream.TELEMETRY, [b"c"])  # committed while the fsync would run
    assert store.lease(max_count=10, max_bytes=1 << 20, sync=False) == []
    worker = threading.Thread(target=pending.run)
    worker.start()
    worker.join()
    assert store.lease(max_count=10, max_bytes=1 << 20, sync=False) == []  # not yet taken back
    syncs = store.syncs
    store.end_sync(pending)
    assert store.syncs == syncs + 1
    assert seqs(store.lease(max_count=10, max_bytes=1 << 20, sync=False)) == [2]  # not c

    later = store.begin_sync()
    assert later is not None
    later.run()
    store.end_sync(later)
    assert seqs(store.lease(max_count=10, max_bytes=1 << 20, sync=False)) == [3]
    assert store.begin_sync() is None  # everything durable: nothing to do


def test_an_alarm_commit_is_durable_at_once_and_a_late_sync_does_not_lower_it(
    open_store: OpenStore,
) -> None:
    store = open_store()
    store.append(Stream.TELEMETRY, [b"t1"])
    sync_now(store)
    store.append(Stream.TELEMETRY, [b"t2"])
    pending = store.begin_sync()
    assert pending is not None
    store.append(Stream.ALARM, [b"alarm"])  # synchronous=FULL: t2 is durable with it
    store.append(Stream.TELEMETRY, [b"t3"])
    pending.run()
    store.end_sync(pending)  # covered less than the alarm's commit did
    got = store.lease(max_count=10, max_bytes=1 << 20, sync=False)
    assert [(r.stream, r.seq) for r in got] == [
        (Stream.ALARM, 1),
        (Stream.TELEMETRY, 1),
        (Stream.TELEMETRY, 2),
    ]


def test_a_sync_still_running_when_the_store_closes_fails_nothing(open_store: OpenStore) -> None:
    store = open_store()
    store.append(Stream.EVENT, [b"e1"])
    sync_now(store)
    store.append(Stream.EVENT, [b"e2"])
    pending = store.begin_sync()
    assert pending is not None
    store.close()
    pending.run()  # its own descriptor: still open, still the WAL's
    store = open_store()
    assert seqs(store.lease(max_count=10, max_bytes=1 << 20)) == [1, 2]


def test_a_lease_after_one_that_ran_dry_asks_nothing_until_something_became_leasable(
    open_store: OpenStore,
) -> None:
    store = open_store()
    store.append(Stream.TELEMETRY, [b"a", b"b"])
    got = store.lease(max_count=10, max_bytes=1 << 20)
    assert seqs(got) == [1, 2]
    queries = store.lease_queries
    assert store.lease(max_count=10, max_bytes=1 << 20) == []
    assert store.lease(max_count=10, max_bytes=1 << 20, sync=False) == []
    assert store.lease_queries == queries  # nothing new: no query

    store.release([(Stream.TELEMETRY, 2)])  # a lost publish: leasable again
    assert seqs(store.lease(max_count=10, max_bytes=1 << 20)) == [2]
    store.append(Stream.EVENT, [b"e"])  # committed, not yet durable
    assert store.lease(max_count=10, max_bytes=1 << 20, sync=False) == []
    sync_now(store)
    assert [(r.stream, r.seq) for r in store.lease(max_count=10, max_bytes=1 << 20)] == [
        (Stream.EVENT, 1)
    ]
    store.append(Stream.ALARM, [b"x"])  # durable with its commit
    assert [(r.stream, r.seq) for r in store.lease(max_count=10, max_bytes=1 << 20)] == [
        (Stream.ALARM, 1)
    ]
    store.append(Stream.TELEMETRY, [b"c", b"d", b"e"])
    assert seqs(store.lease(max_count=2, max_bytes=1 << 20)) == [3, 4]  # stopped at the count
    assert seqs(store.lease(max_count=2, max_bytes=1 << 20)) == [5]  # so it looks again
    store.release_all()
    assert len(store.lease(max_count=10, max_bytes=1 << 20)) == 7  # 1 alarm, 1 event, 5
