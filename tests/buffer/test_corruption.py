"""A damaged database of the buffer's own is moved aside with a timestamp and a fresh one
created; a file that is not one of its databases is never moved nor overwritten."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from buffer import BufferMismatchError, Stream
from buffer.schema import APPLICATION_ID
from tests.buffer.conftest import OpenStore


def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "buffer.db"


def fill(open_store: OpenStore, n: int = 2000) -> None:
    store = open_store()
    store.append(Stream.TELEMETRY, [os.urandom(200) for _ in range(n)])
    store.close()


def assert_fresh_store_works(open_store: OpenStore, tmp_path: Path, original: bytes) -> None:
    store = open_store()
    moved = store.recovered_from
    assert moved is not None
    assert moved.parent == db_path(tmp_path).parent
    assert moved.name.startswith("buffer.db.corrupt-2023")  # the injected clock's date, UTC
    assert moved.read_bytes() == original
    assert store.append(Stream.ALARM, [b"after recovery"]) == [1]
    assert [r.payload for r in store.lease(max_count=5, max_bytes=100)] == [b"after recovery"]
    store.close()
    assert open_store().recovered_from is None


def test_a_clean_open_reports_no_recovery(open_store: OpenStore) -> None:
    fill(open_store, 10)
    assert open_store().recovered_from is None


def assert_refused_untouched(open_store: OpenStore, tmp_path: Path, original: bytes) -> None:
    with pytest.raises(BufferMismatchError, match="not a SafeEdge buffer database"):
        open_store()
    assert db_path(tmp_path).read_bytes() == original
    assert list(db_path(tmp_path).parent.glob("*.corrupt-*")) == []


def test_a_garbage_file_is_refused_and_left_untouched(
    open_store: OpenStore, tmp_path: Path
) -> None:
    db_path(tmp_path).parent.mkdir(parents=True)
    garbage = os.urandom(64 * 1024)
    db_path(tmp_path).write_bytes(garbage)
    assert_refused_untouched(open_store, tmp_path, garbage)


def test_a_text_file_at_the_buffer_path_is_refused_and_left_untouched(
    open_store: OpenStore, tmp_path: Path
) -> None:
    db_path(tmp_path).parent.mkdir(parents=True)
    text = b"root:x:0:0:root:/root:/bin/bash\n" * 40
    db_path(tmp_path).write_bytes(text)
    assert_refused_untouched(open_store, tmp_path, text)


def test_a_truncated_database_is_moved_aside(open_store: OpenStore, tmp_path: Path) -> None:
    fill(open_store)
    data = db_path(tmp_path).read_bytes()
    truncated = data[: len(data) // 2]
    db_path(tmp_path).write_bytes(truncated)
    assert_fresh_store_works(open_store, tmp_path, truncated)


def test_a_database_truncated_inside_its_header_is_refused_it_cannot_be_told_apart(
    open_store: OpenStore, tmp_path: Path
) -> None:
    fill(open_store, 10)
    truncated = db_path(tmp_path).read_bytes()[:50]  # the application id is at byte 68
    db_path(tmp_path).write_bytes(truncated)
    assert_refused_untouched(open_store, tmp_path, truncated)


def test_a_database_with_overwritten_pages_is_moved_aside(
    open_store: OpenStore, tmp_path: Path
) -> None:
    fill(open_store)
    data = bytearray(db_path(tmp_path).read_bytes())
    for page in range(2, len(data) // 4096, 3):
        data[page * 4096 : page * 4096 + 64] = b"\xff" * 64
    db_path(tmp_path).write_bytes(bytes(data))
    assert_fresh_store_works(open_store, tmp_path, bytes(data))


def test_another_applications_database_is_refused_and_left_untouched(
    open_store: OpenStore, tmp_path: Path
) -> None:
    db_path(tmp_path).parent.mkdir(parents=True)
    conn = sqlite3.connect(db_path(tmp_path))
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    conn.execute("INSERT INTO invoices(total) VALUES (12.5)")
    conn.commit()
    conn.close()
    original = db_path(tmp_path).read_bytes()
    assert_refused_untouched(open_store, tmp_path, original)


def test_the_key_file_is_copied_beside_the_moved_database(
    open_store: OpenStore, tmp_path: Path
) -> None:
    fill(open_store, 10)
    data = db_path(tmp_path).read_bytes()
    db_path(tmp_path).write_bytes(data[:100] + b"\xff" * (len(data) - 100))  # our header
    store = open_store()
    assert store.recovered_from is not None
    copy = store.recovered_from.with_name(store.recovered_from.name + ".key")
    assert copy.read_bytes() == (tmp_path / "secrets" / "buffer.key").read_bytes()
    assert os.stat(copy).st_mode & 0o077 == 0


def test_an_empty_file_is_a_fresh_database_not_a_corrupt_one(
    open_store: OpenStore, tmp_path: Path
) -> None:
    db_path(tmp_path).parent.mkdir(parents=True)
    db_path(tmp_path).touch()
    store = open_store()
    assert store.recovered_from is None
    assert store.append(Stream.EVENT, [b"e"]) == [1]


def test_a_database_from_a_newer_schema_is_refused_and_left_in_place(
    open_store: OpenStore, tmp_path: Path
) -> None:
    fill(open_store, 10)
    conn = sqlite3.connect(db_path(tmp_path))
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(BufferMismatchError, match="newer"):
        open_store()
    assert [p.name for p in db_path(tmp_path).parent.glob("*.corrupt-*")] == []


def test_our_application_id_is_set(open_store: OpenStore, tmp_path: Path) -> None:
    open_store().close()
    conn = sqlite3.connect(db_path(tmp_path))
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    conn.close()


def test_is_own_database_reads_only_the_header(tmp_path: Path, open_store: OpenStore) -> None:
    from buffer.schema import is_own_database

    assert not is_own_database(tmp_path / "missing.db")
    fill(open_store, 1)
    assert is_own_database(db_path(tmp_path))
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    assert not is_own_database(other)
