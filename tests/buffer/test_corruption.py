"""Damaged databases and WALs: moved aside, salvaged record by record, and never a seq reused;
a file that is not one of the buffer's databases (no buffer header, no ledger beside it) is
never moved nor overwritten.

Every test checks the three promises: the next seq is above every seq used before; every seq
used before is either back (with its exact payload) or inside a reported gap; the counts in
the ``buffer_corrupt`` report add up.
"""

from __future__ import annotations

import hashlib
import os
import random
import sqlite3
from pathlib import Path

import pytest

from buffer import BufferMismatchError, Corrupt, SeqGap, Store, Stream
from buffer.schema import APPLICATION_ID
from tests.buffer.conftest import OpenStore
from tests.buffer.damage import (
    FRAME_HEADER,
    PAGE,
    WAL_HEADER,
    covered,
    crash_copy,
    flip,
    gaps_of,
    write_private,
)


def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "buffer.db"


def body(seq: int) -> bytes:
    return hashlib.sha256(b"%d" % seq).digest() * 8  # 256 bytes, incompressible


def fill(open_store: OpenStore, n: int = 2000, *, deliver: int = 0) -> None:
    """Telemetry 1..n (``body(seq)``), the first ``deliver`` settled, closed cleanly."""
    store = open_store()
    for first in range(1, n + 1, 100):
        store.append(Stream.TELEMETRY, [body(q) for q in range(first, min(n, first + 99) + 1)])
    if deliver:
        store.lease(max_count=deliver, max_bytes=1 << 30)
        store.settle(accepted=[(Stream.TELEMETRY, q) for q in range(1, deliver + 1)])
    store.close()


def corrupt_report(store: Store) -> Corrupt:
    found = [r for r in store.pending_reports() if isinstance(r, Corrupt)]
    assert len(found) == 1, store.pending_reports()
    return found[0]


def check_accounted(store: Store, n: int) -> set[int]:
    """No seq reused, everything back or in a gap; returns the seqs that came back."""
    back = {r.seq: r.payload for r in store.resend(Stream.TELEMETRY, 1, n)}
    assert all(payload == body(q) for q, payload in back.items())
    assert covered(store, Stream.TELEMETRY, set(back), n) == []
    assert store.append(Stream.TELEMETRY, [b"after"])[0] > n
    return set(back)


def test_a_clean_open_reports_nothing(open_store: OpenStore) -> None:
    fill(open_store, 10)
    store = open_store()
    assert store.recovered_from is None
    assert store.pending_reports() == []
    assert store.append(Stream.TELEMETRY, [b"x"]) == [11]


@pytest.mark.parametrize(
    "damage",
    ["truncated", "header_truncated", "overwritten_pages", "flipped_bytes", "garbage_tail"],
)
def test_a_damaged_database_is_salvaged_and_its_seqs_never_reused(
    open_store: OpenStore, tmp_path: Path, damage: str
) -> None:
    n = 2000
    fill(open_store, n)
    path = db_path(tmp_path)
    data = bytearray(path.read_bytes())
    rng = random.Random(damage)
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "header_truncated":
        data = data[:50]
    elif damage == "overwritten_pages":
        for page in range(2, len(data) // PAGE, 3):
            data[page * PAGE : page * PAGE + 64] = b"\xff" * 64
    elif damage == "flipped_bytes":
        for _ in range(40):
            data[rng.randrange(100, len(data))] ^= 0xFF
    else:
        data[len(data) // 3 :] = os.urandom(len(data) - len(data) // 3)
    write_private(path, bytes(data))
    store = open_store()
    assert store.recovered_from is not None
    assert store.recovered_from.read_bytes() == bytes(data)
    assert store.recovered_from.name.startswith("buffer.db.corrupt-2023")  # injected clock, UTC
    report = corrupt_report(store)
    assert report.cause == "database" and report.detected == "open"
    back = check_accounted(store, n)
    assert report.salvaged == len(back)  # all were undelivered
    assert report.undelivered_lost == n - len(back)
    assert report.delivered_lost == 0
    gaps = gaps_of(store.pending_reports(), Stream.TELEMETRY)
    assert {g.reason for g in gaps} == ({"buffer_corrupt"} if len(back) < n else set())
    if damage in ("truncated", "overwritten_pages", "flipped_bytes", "garbage_tail"):
        assert len(back) > n // 6, f"salvage recovered too little: {len(back)}"  # skipped pages
    if damage == "header_truncated":
        assert back == set()
    # Salvaged records are queued again, in seq order, with their original seqs.
    leased = store.lease(max_count=n, max_bytes=1 << 30)
    assert [r.seq for r in leased][: len(back)] == sorted(back)


def test_salvage_keeps_delivered_records_and_resends_only_undelivered_ones(
    open_store: OpenStore, tmp_path: Path
) -> None:
    fill(open_store, 1000, deliver=600)
    path = db_path(tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) - 8 * PAGE : len(data) - 4 * PAGE] = b"\x00" * (4 * PAGE)  # the newest rows
    write_private(path, bytes(data))
    store = open_store()
    report = corrupt_report(store)
    back = check_accounted(store, 1000)
    assert report.salvaged + report.delivered_kept == len(back)
    assert report.delivered_kept > 0
    leased = {r.seq for r in store.lease(max_count=2000, max_bytes=1 << 30)}
    assert all(q > 600 for q in leased if q <= 1000)
    # The gap starts at the first undelivered seq the ledger knew: delivered ones are not lost.
    assert all(g.from_seq > 600 for g in gaps_of(store.pending_reports(), Stream.TELEMETRY))


def test_a_zero_length_database_beside_a_ledger_is_a_loss_not_a_fresh_start(
    open_store: OpenStore, tmp_path: Path
) -> None:
    fill(open_store, 300, deliver=100)
    write_private(db_path(tmp_path), b"")
    store = open_store()
    report = corrupt_report(store)
    assert report.moved_to is None and report.cause == "database"
    gaps = gaps_of(store.pending_reports(), Stream.TELEMETRY)
    assert [(g.from_seq, g.to_seq, g.reason) for g in gaps] == [(101, 300, "buffer_corrupt")]
    assert report.undelivered_lost == 200
    assert store.append(Stream.TELEMETRY, [b"x"]) == [301]


def test_a_missing_database_beside_a_ledger_continues_above_it(
    open_store: OpenStore, tmp_path: Path
) -> None:
    fill(open_store, 50)
    db_path(tmp_path).unlink()
    store = open_store()
    assert store.append(Stream.TELEMETRY, [b"x"]) == [51]
    assert gaps_of(store.pending_reports())[0].reason == "buffer_corrupt"


def assert_refused_untouched(open_store: OpenStore, tmp_path: Path, original: bytes) -> None:
    with pytest.raises(BufferMismatchError, match="not a SafeEdge buffer database"):
        open_store()
    assert db_path(tmp_path).read_bytes() == original
    assert list(db_path(tmp_path).parent.glob("*.corrupt-*")) == []


def test_a_garbage_file_without_history_is_refused_and_left_untouched(
    open_store: OpenStore, tmp_path: Path
) -> None:
    garbage = os.urandom(64 * 1024)
    write_private(db_path(tmp_path), garbage)
    assert_refused_untouched(open_store, tmp_path, garbage)


def test_a_text_file_at_the_buffer_path_is_refused_and_left_untouched(
    open_store: OpenStore, tmp_path: Path
) -> None:
    text = b"root:x:0:0:root:/root:/bin/bash\n" * 40
    write_private(db_path(tmp_path), text)
    assert_refused_untouched(open_store, tmp_path, text)


def test_garbage_over_our_database_beside_its_ledger_is_moved_aside_and_seqs_go_on(
    open_store: OpenStore, tmp_path: Path
) -> None:
    fill(open_store, 10)  # the ledger beside the file says the buffer lived here
    garbage = os.urandom(64 * 1024)
    write_private(db_path(tmp_path), garbage)
    store = open_store()
    assert store.recovered_from is not None and store.recovered_from.read_bytes() == garbage
    assert store.append(Stream.TELEMETRY, [b"after recovery"])[0] > 10
    store.close()
    assert open_store().recovered_from is None


def test_a_header_truncated_file_without_a_ledger_is_refused_it_cannot_be_told_apart(
    open_store: OpenStore, tmp_path: Path
) -> None:
    fill(open_store, 10)
    db_path(tmp_path).with_name("buffer.db.ledger").unlink()
    truncated = db_path(tmp_path).read_bytes()[:50]  # the application id is at byte 68
    write_private(db_path(tmp_path), truncated)
    assert_refused_untouched(open_store, tmp_path, truncated)


def test_a_flipped_byte_in_the_wal_drops_no_record_silently(
    open_store: OpenStore, tmp_path: Path
) -> None:
    store = open_store()
    n = 0
    for _ in range(60):  # one commit per append: many WAL frames
        store.append(Stream.TELEMETRY, [body(q) for q in range(n + 1, n + 6)])
        n += 5
    alarm = store.append(Stream.ALARM, [b"alarm in the WAL"])
    wal = db_path(tmp_path).with_name("buffer.db-wal")
    frames = (wal.stat().st_size - WAL_HEADER) // (PAGE + FRAME_HEADER)
    assert frames > 30
    copy = crash_copy(db_path(tmp_path), tmp_path / "crash")
    bad = frames // 3
    flip(copy.with_name("buffer.db-wal"), [WAL_HEADER + bad * (PAGE + FRAME_HEADER) + 100])
    store.close()
    after = open_store(path=copy)
    report = corrupt_report(after)
    assert report.cause == "wal" and report.moved_to is None
    assert report.salvaged > 0
    back = check_accounted(after, n)
    assert len(back) >= n - 10  # only the records on the flipped page can be lost
    assert [r.payload for r in after.resend(Stream.ALARM, alarm[0], alarm[0])] == [
        b"alarm in the WAL"
    ]
    assert {g.reason for g in gaps_of(after.pending_reports())} <= {"wal_truncated"}


def test_corruption_found_while_running_is_recovered_in_place(
    open_store: OpenStore, tmp_path: Path
) -> None:
    store = open_store()
    for first in range(1, 2001, 100):
        store.append(Stream.TELEMETRY, [body(q) for q in range(first, first + 100)])
    store.maintain()  # checkpoint-free: make sure the pages are in the file
    store.close()
    store = open_store()
    assert store.check_integrity() == []
    path = db_path(tmp_path)
    with path.open("r+b") as f:  # damage the live file under the open store
        for page in range(3, path.stat().st_size // PAGE, 4):
            f.seek(page * PAGE)
            f.write(b"\xee" * 48)
    problems = store.check_integrity()
    assert problems, "the integrity check did not notice"
    report = store.recover()
    assert report.corrupt is not None and report.corrupt.detected == "running"
    assert report.recovered_from is not None
    check_accounted(store, 2000)


def test_another_applications_database_is_refused_and_left_untouched(
    open_store: OpenStore, tmp_path: Path
) -> None:
    path = db_path(tmp_path)
    write_private(path, b"")
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    conn.execute("INSERT INTO invoices(total) VALUES (12.5)")
    conn.commit()
    conn.close()
    assert_refused_untouched(open_store, tmp_path, path.read_bytes())


def test_is_own_database_reads_only_the_header(tmp_path: Path, open_store: OpenStore) -> None:
    from buffer.schema import is_own_database

    assert not is_own_database(tmp_path / "missing.db")
    fill(open_store, 1)
    assert is_own_database(db_path(tmp_path))
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    assert not is_own_database(other)


def test_the_key_file_is_copied_beside_the_moved_database(
    open_store: OpenStore, tmp_path: Path
) -> None:
    fill(open_store, 10)
    write_private(db_path(tmp_path), b"not a database at all" * 100)
    store = open_store()
    assert store.recovered_from is not None
    copy = store.recovered_from.with_name(store.recovered_from.name + ".key")
    assert copy.read_bytes() == (tmp_path / "secrets" / "buffer.key").read_bytes()
    assert os.stat(copy).st_mode & 0o077 == 0


def test_an_empty_file_without_history_is_a_fresh_database(
    open_store: OpenStore, tmp_path: Path
) -> None:
    write_private(db_path(tmp_path), b"")
    store = open_store()
    assert store.recovered_from is None
    assert store.pending_reports() == []
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


def test_reports_are_flushed_into_events_once(open_store: OpenStore, tmp_path: Path) -> None:
    fill(open_store, 100)
    write_private(db_path(tmp_path), b"")
    store = open_store()
    seen: list[str] = []
    assert store.flush_reports(lambda r: seen.append(type(r).__name__) or b"{}") == 2
    assert sorted(seen) == ["Corrupt", "SeqGap"]
    assert store.pending_reports() == []
    store.close()
    store = open_store()
    assert store.pending_reports() == []
    assert isinstance(SeqGap, type)
