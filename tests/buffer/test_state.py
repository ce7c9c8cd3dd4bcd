"""The opaque state table: written in the append's transaction, sealed, read back after reopen."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from buffer import BufferFullError, Stream
from buffer.errors import RecordAuthError
from buffer.schema import MIGRATIONS, SCHEMA_VERSION
from tests.buffer.conftest import OpenStore


def test_state_written_with_an_append_is_read_back_after_reopening(
    open_store: OpenStore,
) -> None:
    store = open_store()
    store.append(Stream.ALARM, [b"raise"], state={"alarm:T1": b"level=2", "alarm:T2": b""})
    store.append(Stream.ALARM, [b"clear"], state={"alarm:T1": b"level=0"})
    store.close()
    again = open_store()
    assert again.state("alarm:T1") == b"level=0"
    assert again.state("alarm:T2") == b""  # an empty value is a value
    assert again.state("alarm:T3") is None
    assert again.states(prefix="alarm:") == {"alarm:T1": b"level=0", "alarm:T2": b""}
    assert again.states(prefix="other:") == {}


def test_a_refused_append_stores_none_of_its_state(open_store: OpenStore) -> None:
    store = open_store(reserve_bytes=2**62)  # every telemetry append eats into the reserve
    with pytest.raises(BufferFullError):
        store.append(Stream.TELEMETRY, [b"x"], state={"k": b"v"})
    assert store.state("k") is None


def test_state_values_are_sealed_and_bound_to_their_key(
    open_store: OpenStore, tmp_path: Path
) -> None:
    store = open_store()
    secret = b"plaintext-state-marker" * 4
    store.append(Stream.EVENT, [b"e"], state={"a": secret, "b": b"other"})
    store.close()
    db = tmp_path / "data" / "buffer.db"
    conn = sqlite3.connect(db)
    with conn:
        rows = dict(conn.execute("SELECT key, sealed FROM state").fetchall())
        assert all(secret not in v for v in rows.values())
        # a sealed value moved to another key fails authentication
        nonce_a = conn.execute("SELECT nonce FROM state WHERE key = 'a'").fetchone()[0]
        conn.execute("UPDATE state SET sealed = ?, nonce = ? WHERE key = 'b'", (rows["a"], nonce_a))
    conn.close()
    again = open_store()
    with pytest.raises(RecordAuthError):
        again.state("b")


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_buffer_gains_the_state_table_in_place_and_keeps_its_version(
    open_store: OpenStore, tmp_path: Path, version: int
) -> None:
    # version 1, and a version 2 file from before the state table (made in place like the
    # seq-ledger era's columns: the version stays 2, so an older agent still opens the file)
    db = tmp_path / "data" / "buffer.db"
    db.parent.mkdir(parents=True)
    os.close(os.open(db, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    for v in range(version):
        for statement in MIGRATIONS[v]:
            conn.execute(statement)
    conn.execute("PRAGMA application_id = 1397048386")
    conn.execute(f"PRAGMA user_version = {version}")
    conn.close()
    store = open_store()
    store.append(Stream.ALARM, [b"a"], state={"k": b"v"})
    assert store.state("k") == b"v"
    assert store.stats().streams[Stream.ALARM].undelivered == 1
    store.close()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    conn.close()


def test_delivered_records_evicted_before_their_retention_are_reported_as_shortened(
    open_store: OpenStore,
) -> None:
    store = open_store(capacity_bytes=4096, retention_days=30.0)
    for _ in range(12):  # capacity pushes delivered records out long before 30 days
        seqs = store.append(Stream.TELEMETRY, [os.urandom(500)])
        store.settle(accepted=[(Stream.TELEMETRY, s) for s in seqs])
    assert store.take_evictions() == []  # not a drop: they were delivered
    shortened = store.take_shortened()
    assert [e.stream for e in shortened] == [Stream.TELEMETRY]
    assert shortened[0].count == 12 - len(list(store.resend(Stream.TELEMETRY, 1, 12)))
    assert store.take_shortened() == []


def test_state_rows_are_salvaged_with_the_records_from_a_damaged_database(
    open_store: OpenStore, tmp_path: Path
) -> None:
    store = open_store()
    store.append(Stream.ALARM, [b"raise"], state={"alarm:T1": b"level=2"})
    store.append(Stream.ALARM, [b"escalate"], state={"alarm:T1": b"level=3", "alarm:T2": b""})
    store.close()
    db = tmp_path / "data" / "buffer.db"
    data = bytearray(db.read_bytes())
    data[:16] = b"\xff" * 16  # not an SQLite file any more; the ledger beside says it is ours
    db.write_bytes(bytes(data))
    again = open_store()
    assert again.recovered_from is not None
    assert again.state("alarm:T1") == b"level=3"  # the last value, authenticated
    assert again.state("alarm:T2") == b""
    assert len(list(again.resend(Stream.ALARM, 1, 2))) == 2
