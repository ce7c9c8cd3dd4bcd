"""The seq ledger: covered before used, hi-lo blocks that bound its fsync rate, a clean close
without a gap, and a missing, damaged or foreign ledger handled without reusing a seq."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from buffer import BufferMismatchError, BufferPermissionError, Stream
from buffer.ledger import MIN_BLOCK, SLOT, Ledger, LedgerDamaged
from buffer.recovery import LEDGER_MARGIN
from tests.buffer.conftest import OpenStore
from tests.buffer.damage import crash_copy, flip, gaps_of


def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "buffer.db"


def ledger_of(tmp_path: Path) -> Ledger:
    found = Ledger.load(db(tmp_path).with_name("buffer.db.ledger"), "gw-01")
    assert isinstance(found, Ledger)
    return found


def test_every_written_seq_is_covered_by_the_ledger_on_disk(
    open_store: OpenStore, tmp_path: Path
) -> None:
    store = open_store()
    for n in (1, 5, 1000, 3000):
        seqs = store.append(Stream.TELEMETRY, [b"x"] * n)
        assert ledger_of(tmp_path).marks[Stream.TELEMETRY].reserved >= seqs[-1]
        assert not ledger_of(tmp_path).clean


def test_a_clean_close_continues_without_a_gap(open_store: OpenStore, tmp_path: Path) -> None:
    store = open_store()
    store.append(Stream.EVENT, [b"a", b"b"])
    store.close()
    assert ledger_of(tmp_path).clean
    assert ledger_of(tmp_path).marks[Stream.EVENT].reserved == 2
    store = open_store()
    assert store.open_report.clean and store.pending_reports() == []
    assert store.append(Stream.EVENT, [b"c"]) == [3]


def test_a_crash_continues_above_the_ceiling_and_reports_the_range(
    open_store: OpenStore, tmp_path: Path
) -> None:
    store = open_store()
    store.append(Stream.TELEMETRY, [b"x"] * 10)
    copy = crash_copy(db(tmp_path), tmp_path / "crash")
    store.close()
    after = open_store(path=copy)
    gaps = gaps_of(after.pending_reports(), Stream.TELEMETRY)
    assert [(g.from_seq, g.reason) for g in gaps] == [(11, "power_loss")]
    assert after.append(Stream.TELEMETRY, [b"y"]) == [gaps[0].to_seq + 1]
    assert gaps[0].to_seq >= 10 + MIN_BLOCK


@pytest.mark.parametrize("trouble", ["missing", "damaged"])
def test_a_missing_or_damaged_ledger_is_rebuilt_above_the_database_with_a_margin(
    open_store: OpenStore, tmp_path: Path, trouble: str
) -> None:
    store = open_store()
    store.append(Stream.ALARM, [b"a"] * 7)
    store.close()
    ledger = db(tmp_path).with_name("buffer.db.ledger")
    if trouble == "missing":
        ledger.unlink()
    else:
        flip(ledger, [20, SLOT + 20])
        assert isinstance(Ledger.load(ledger, "gw-01"), LedgerDamaged)
    store = open_store()
    assert store.open_report.ledger == "rebuilt"
    gaps = gaps_of(store.pending_reports(), Stream.ALARM)
    assert [(g.from_seq, g.to_seq, g.reason) for g in gaps] == [
        (8, 7 + LEDGER_MARGIN, "ledger_rebuilt")
    ]
    assert store.append(Stream.ALARM, [b"b"]) == [8 + LEDGER_MARGIN]


def test_a_torn_slot_leaves_the_previous_state(open_store: OpenStore, tmp_path: Path) -> None:
    store = open_store()
    store.append(Stream.EVENT, [b"a"])
    store.close()
    path = db(tmp_path).with_name("buffer.db.ledger")
    newest = ledger_of(tmp_path).generation
    flip(path, [(newest % 2) * SLOT + 30])  # the last write was torn
    older = ledger_of(tmp_path)
    assert older.generation == newest - 1 and not older.clean
    store = open_store()  # the older slot is unclean: continue above its ceiling
    assert store.append(Stream.EVENT, [b"b"])[0] > older.marks[Stream.EVENT].reserved


def test_another_gateways_ledger_is_refused(open_store: OpenStore, tmp_path: Path) -> None:
    open_store().close()
    with pytest.raises(BufferMismatchError, match="ledger belongs to gateway"):
        open_store(gateway_id="gw-02", path=db(tmp_path))


def test_ledger_fsyncs_stay_below_one_a_second_at_a_thousand_records_a_second(
    open_store: OpenStore,
) -> None:
    now = [0.0]
    store = open_store(monotonic=lambda: now[0])
    start = store.ledger_writes
    for _ in range(100):  # 100 simulated seconds, 1,000 single-reading records each
        store.append(Stream.TELEMETRY, [b"r"] * 1000)
        now[0] += 1.0
    assert (store.ledger_writes - start) / 100 <= 1.0
    assert (store.ledger_writes - start) / 100 <= 0.5  # the block grew past 2 s of seqs


def test_a_database_from_schema_1_gets_a_ledger_without_a_gap(
    open_store: OpenStore, tmp_path: Path
) -> None:
    store = open_store()
    store.append(Stream.EVENT, [b"a", b"b"])
    store.close()
    db(tmp_path).with_name("buffer.db.ledger").unlink()
    conn = sqlite3.connect(db(tmp_path))
    for column in ("refused", "refused_pending", "refused_first_ms"):
        conn.execute(f"ALTER TABLE streams DROP COLUMN {column}")
    conn.execute("ALTER TABLE streams DROP COLUMN refused_last_ms")
    conn.execute("ALTER TABLE streams DROP COLUMN refused_reason")
    conn.execute("DROP TABLE reports")
    conn.execute("DELETE FROM streams WHERE stream = 3")  # schema 1 had no incident stream
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    store = open_store()
    assert store.open_report.ledger == "created"
    assert store.pending_reports() == []
    assert store.append(Stream.EVENT, [b"c"]) == [3]


def test_buffer_files_are_created_0600(open_store: OpenStore, tmp_path: Path) -> None:
    store = open_store()
    store.append(Stream.ALARM, [b"a"])
    names = ["buffer.db", "buffer.db-wal", "buffer.db-shm", "buffer.db.ledger", "buffer.db.lock"]
    for name in names:
        mode = stat.S_IMODE(os.stat(db(tmp_path).with_name(name)).st_mode)
        assert mode & 0o077 == 0, f"{name} is {mode:04o}"


@pytest.mark.parametrize("name", ["buffer.db", "buffer.db-wal", "buffer.db.ledger"])
def test_a_buffer_file_open_to_others_is_refused(
    open_store: OpenStore, tmp_path: Path, name: str
) -> None:
    store = open_store()
    store.append(Stream.ALARM, [b"a"])
    copy = crash_copy(db(tmp_path), tmp_path / "copy")  # keeps a -wal
    store.close()
    os.chmod(copy.with_name(name), 0o644)
    with pytest.raises(BufferPermissionError, match="chmod 600"):
        open_store(path=copy)
