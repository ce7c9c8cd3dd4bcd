"""Deferred settles (``Store.settle(defer=True)``): staged deliveries ride along with the next
append's transaction; until written they keep their leases, and a crash loses only the mark
(the records are pending again, to be sent again with the same ids), never a record."""

from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path

from buffer import Store, Stream


def open_store(root: Path) -> Store:
    return Store.open(path=root / "b.db", key_file=root / "b.key", gateway_id="gw")


def states(root: Path) -> dict[int, int]:
    conn = sqlite3.connect(root / "b.db")
    try:
        return dict(conn.execute("SELECT seq, state FROM records WHERE stream = 2"))
    finally:
        conn.close()


def test_the_next_append_writes_staged_deliveries_in_its_own_commit(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        store.append(Stream.TELEMETRY, [b"a", b"b", b"c"])
        leased = store.lease(max_count=10, max_bytes=1 << 20)
        commits = store.commits
        store.settle(accepted=[(r.stream, r.seq) for r in leased[:2]], defer=True)
        assert store.commits == commits and store.staged_settles == 2
        store.release_all()  # a disconnect: only the unsettled one comes back
        assert [r.seq for r in store.lease(max_count=10, max_bytes=1 << 20)] == [3]
        assert states(tmp_path) == {1: 0, 2: 0, 3: 0}
        store.append(Stream.TELEMETRY, [b"d"])
        assert store.commits == commits + 1  # one transaction: the record and the marks
        assert store.staged_settles == 0
        assert states(tmp_path) == {1: 1, 2: 1, 3: 0, 4: 0}
        assert store.stats().streams[Stream.TELEMETRY].delivered == 2


def test_a_dead_letter_writes_what_was_staged_with_it_at_once(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        store.append(Stream.EVENT, [b"a", b"b"])
        store.lease(max_count=10, max_bytes=1 << 20)
        store.settle(accepted=[(Stream.EVENT, 1)], defer=True)
        store.settle(rejected=[(Stream.EVENT, 2, "0x87 not authorized")], defer=True)
        assert store.staged_settles == 0
        ev = store.stats().streams[Stream.EVENT]
        assert (ev.delivered, ev.dead) == (1, 1)


def test_stats_maintain_and_close_write_staged_deliveries_first(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.append(Stream.TELEMETRY, [b"a", b"b", b"c"])
    for key in [(r.stream, r.seq) for r in store.lease(max_count=10, max_bytes=1 << 20)]:
        store.settle(accepted=[key], defer=True)
        if key[1] == 1:
            assert store.stats().streams[Stream.TELEMETRY].delivered == 1
        elif key[1] == 2:
            store.maintain()
            assert states(tmp_path)[2] == 1
    store.close()
    assert states(tmp_path) == {1: 1, 2: 1, 3: 1}


def test_a_crash_before_the_write_loses_the_marks_only(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        store.append(Stream.TELEMETRY, [b"a", b"b"])
    pid = os.fork()
    if pid == 0:  # the agent: takes both PUBACKs, stages them, dies before any append
        try:
            store = open_store(tmp_path)
            keys = [(r.stream, r.seq) for r in store.lease(max_count=10, max_bytes=1 << 20)]
            store.settle(accepted=keys, defer=True)
            os.kill(os.getpid(), signal.SIGKILL)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status)
    with open_store(tmp_path) as store:
        again = store.lease(max_count=10, max_bytes=1 << 20)
        assert [(r.seq, r.payload) for r in again] == [(1, b"a"), (2, b"b")]  # sent again
