"""The incident stream (schema version 2): a version-1 buffer is migrated in place, incident
records are stored and read like the others, and they are never leased for the uplink."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from buffer import Store, StoreReader, Stream
from buffer.schema import MIGRATIONS, SCHEMA_VERSION
from tests.buffer.conftest import OpenStore


def test_a_version_1_buffer_gains_the_incident_stream_and_keeps_its_records(
    open_store: OpenStore, tmp_path: Path
) -> None:
    store = open_store()
    store.append(Stream.ALARM, [b"a1", b"a2"])
    store.close()
    db = tmp_path / "data" / "buffer.db"
    conn = sqlite3.connect(db, isolation_level=None)  # turn it back into a version-1 file
    conn.execute("DELETE FROM streams WHERE stream = 3")
    conn.execute("PRAGMA user_version = 1")
    conn.close()

    store = open_store()
    assert store.append(Stream.INCIDENT, [b"i1", b"i2"]) == [1, 2]
    assert [r.payload for r in store.resend(Stream.ALARM, 1, 2)] == [b"a1", b"a2"]
    store.close()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    assert conn.execute("SELECT last_seq FROM streams WHERE stream = 3").fetchone()[0] == 2
    conn.close()
    assert MIGRATIONS[1] == ("INSERT INTO streams(stream) VALUES (3)",)


def test_incident_records_are_read_back_but_never_leased(
    open_store: OpenStore, tmp_path: Path
) -> None:
    store: Store = open_store()
    store.append(Stream.INCIDENT, [b"window"])
    store.append(Stream.EVENT, [b"event"])
    leased = store.lease(max_count=10, max_bytes=1 << 20)
    assert [(r.stream, r.payload) for r in leased] == [(Stream.EVENT, b"event")]
    assert store.stats().streams[Stream.INCIDENT].undelivered == 1
    store.close()
    with StoreReader.open(
        path=tmp_path / "data" / "buffer.db",
        key_file=tmp_path / "secrets" / "buffer.key",
        gateway_id="gw-01",
    ) as reader:
        got = [(r.stream, r.payload) for r in reader.records(stream=Stream.INCIDENT)]
    assert got == [(Stream.INCIDENT, b"window")]
