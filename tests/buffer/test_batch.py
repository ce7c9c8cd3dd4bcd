"""Appending several streams at once (one device poll): one transaction, each stream's seqs as
if appended alone, refused telemetry left out while the rest commits."""

from __future__ import annotations

import pytest

from buffer import BufferFullError, Refused, Stream
from tests.buffer.conftest import OpenStore


def test_a_batch_of_four_streams_is_one_commit_with_each_streams_seqs_continuing(
    open_store: OpenStore,
) -> None:
    store = open_store()
    store.append(Stream.TELEMETRY, [b"t1", b"t2"])
    store.append(Stream.ALARM, [b"a1"])
    before = store.commits
    done = store.append_batch(
        {
            Stream.TELEMETRY: [b"t3"],
            Stream.INCIDENT: [b"i1"],
            Stream.ALARM: [b"a2", b"a3"],
            Stream.EVENT: [b"e1"],
        },
        state={"alarm:T1": b"open"},
    )
    assert store.commits - before == 1
    assert done.refused is None
    assert done.seqs == {
        Stream.ALARM: [2, 3],
        Stream.EVENT: [1],
        Stream.TELEMETRY: [3],
        Stream.INCIDENT: [1],
    }
    assert list(done.seqs) == [Stream.ALARM, Stream.EVENT, Stream.TELEMETRY, Stream.INCIDENT]
    assert [r.payload for r in store.resend(Stream.ALARM, 1, 9)] == [b"a1", b"a2", b"a3"]
    assert [r.payload for r in store.resend(Stream.TELEMETRY, 1, 9)] == [b"t1", b"t2", b"t3"]
    assert store.state("alarm:T1") == b"open"
    store.close()
    again = open_store()  # the seq ledger and streams.last_seq moved with the batch
    assert again.append(Stream.ALARM, [b"a4"]) == [4]
    assert again.append(Stream.INCIDENT, [b"i2"]) == [2]


def test_empty_parts_are_no_commit_and_store_no_state(open_store: OpenStore) -> None:
    store = open_store()
    before = store.commits
    done = store.append_batch({Stream.ALARM: [], Stream.TELEMETRY: []}, state={"k": b"v"})
    assert (done.seqs, done.refused, store.commits - before) == ({}, None, 0)
    assert store.state("k") is None


def test_telemetry_refused_for_the_reserve_is_left_out_and_the_alarms_commit(
    open_store: OpenStore,
) -> None:
    store = open_store(reserve_bytes=2**62)  # every telemetry append eats into the reserve
    done = store.append_batch(
        {Stream.ALARM: [b"raise"], Stream.TELEMETRY: [b"x", b"y"]}, state={"alarm:T1": b"1"}
    )
    assert done.seqs == {Stream.ALARM: [1]}
    assert isinstance(done.refused, BufferFullError)
    assert "kept for alarms and events" in str(done.refused)
    streams = store.stats().streams
    assert (streams[Stream.ALARM].last_seq, streams[Stream.TELEMETRY].last_seq) == (1, 0)
    assert store.state("alarm:T1") == b"1"  # the state goes with what was committed
    [refused] = [r for r in store.pending_reports() if isinstance(r, Refused)]
    assert (refused.stream, refused.count) == (Stream.TELEMETRY, 2)  # counted, no seq spent


def test_a_batch_of_only_refused_telemetry_raises_and_stores_nothing(
    open_store: OpenStore,
) -> None:
    store = open_store(reserve_bytes=2**62)
    before = store.commits
    with pytest.raises(BufferFullError):
        store.append_batch({Stream.TELEMETRY: [b"x"]}, state={"k": b"v"})
    assert store.state("k") is None
    assert store.stats().streams[Stream.TELEMETRY].last_seq == 0
    assert store.commits - before == 1  # only the refusal's own count was written
