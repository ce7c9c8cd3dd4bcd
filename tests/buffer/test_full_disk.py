"""A full disk: telemetry is refused (counted, nothing stored) before the reserve, alarms and
events still get in, a genuine SQLITE_FULL / ENOSPC is a BufferFullError that leaves the store
usable, and freeing room lets telemetry in again.

Two real limits: SQLite's ``max_page_count`` (always) and a small tmpfs mounted for the test
(the tests run as root; a failed mount fails the test).

On the tmpfs, a second file plays "another process filled the disk": then settling, releasing,
evicting and alarms still work (the ballast file gives the reserve back), across a restart too,
refused telemetry is counted persistently and reported, and everything recovers once the
space returns."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from buffer import BufferFullError, Store, Stream
from tests.buffer.conftest import Clock, OpenStore

KIB = 1024


def blob() -> bytes:
    return os.urandom(2 * KIB)  # incompressible: every record costs the same pages


def fill_telemetry(store: Store) -> tuple[list[int], BufferFullError]:
    seqs: list[int] = []
    for _ in range(100_000):
        try:
            seqs += store.append(Stream.TELEMETRY, [blob()])
        except BufferFullError as exc:
            return seqs, exc
    raise AssertionError("telemetry was never refused")


def fill_alarms(store: Store) -> tuple[list[int], BufferFullError]:
    seqs: list[int] = []
    for _ in range(100_000):
        try:
            seqs += store.append(Stream.ALARM, [blob()])
        except BufferFullError as exc:
            return seqs, exc
    raise AssertionError("the disk never filled")


def test_telemetry_is_refused_at_the_reserve_and_alarms_still_get_in(
    open_store: OpenStore,
) -> None:
    store = open_store(max_file_bytes=512 * KIB, reserve_bytes=128 * KIB)
    telemetry, refused = fill_telemetry(store)
    assert len(telemetry) > 50
    assert "kept for alarms and events" in str(refused)
    assert store.stats().streams[Stream.TELEMETRY].last_seq == len(telemetry)  # no seq spent
    alarms = store.append(Stream.ALARM, [blob() for _ in range(10)])
    events = store.append(Stream.EVENT, [blob()])
    assert (alarms, events) == (list(range(1, 11)), [1])
    with pytest.raises(BufferFullError):
        store.append(Stream.TELEMETRY, [b"still refused"])


def test_a_genuine_sqlite_full_fails_the_append_whole_and_the_store_keeps_working(
    open_store: OpenStore,
) -> None:
    store = open_store(max_file_bytes=512 * KIB, reserve_bytes=128 * KIB)
    telemetry, _ = fill_telemetry(store)
    alarms, full = fill_alarms(store)
    assert "SQLITE_FULL" in repr(full.__cause__) or "full" in str(full).lower()
    assert len(alarms) >= 20  # the reserve held at least 20 records of 2 KiB
    # Nothing of the failed append is there, and its seq was not spent.
    stats = store.stats().streams
    assert stats[Stream.ALARM].last_seq == stats[Stream.ALARM].undelivered == len(alarms)
    leased = store.lease(max_count=10_000, max_bytes=1 << 30)
    assert len(leased) == len(alarms) + len(telemetry)
    store.settle(accepted=[(r.stream, r.seq) for r in leased])
    store.maintain()  # room is short: delivered records are freed
    assert store.append(Stream.TELEMETRY, [blob()]) == [len(telemetry) + 1]
    assert store.append(Stream.ALARM, [blob()]) == [len(alarms) + 1]


def test_every_record_whose_append_returned_survives_a_full_disk_and_a_reopen(
    open_store: OpenStore,
) -> None:
    store = open_store(max_file_bytes=512 * KIB, reserve_bytes=128 * KIB)
    telemetry, _ = fill_telemetry(store)
    alarms, _ = fill_alarms(store)
    store.close()
    store = open_store(max_file_bytes=512 * KIB, reserve_bytes=128 * KIB)
    assert [r.seq for r in store.resend(Stream.ALARM, 1, 10**6)] == alarms
    assert [r.seq for r in store.resend(Stream.TELEMETRY, 1, 10**6)] == telemetry


def test_a_file_limit_must_leave_room_beyond_the_reserve(open_store: OpenStore) -> None:
    with pytest.raises(ValueError, match="reserve"):
        open_store(max_file_bytes=64 * KIB, reserve_bytes=64 * KIB)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 12 MiB tmpfs: a real file system that runs out of space (ENOSPC)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=12m,mode=0700", "tmpfs", str(mnt)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (run the tests as root): {done.stderr.decode()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.integration
def test_on_a_full_file_system_alarms_use_the_reserve_and_the_store_survives_enospc(
    small_fs: Path, clock: Clock
) -> None:
    def open_it() -> Store:
        return Store.open(
            path=small_fs / "buffer.db",
            key_file=small_fs / "buffer.key",
            gateway_id="gw-01",
            reserve_bytes=1024 * KIB,
            clock_ms=clock,
        )

    store = open_it()
    try:
        telemetry, refused = fill_telemetry(store)
        assert len(telemetry) > 500
        assert "kept for alarms and events" in str(refused)
        alarms, full = fill_alarms(store)
        assert len(alarms) >= 100  # 1 MiB reserve; a 2 KiB alarm takes a page, plus WAL frames
        assert isinstance(full, BufferFullError)
        assert store.stats().streams[Stream.ALARM].undelivered == len(alarms)
    finally:
        store.close()
    store = open_it()
    try:
        assert [r.seq for r in store.resend(Stream.ALARM, 1, 10**6)] == alarms
        assert store.stats().streams[Stream.TELEMETRY].last_seq == len(telemetry)
    finally:
        store.close()


def fill_disk(where: Path) -> Path:
    """Another process fills the file system to the last block."""
    filler = where / "filler"
    try:
        with filler.open("wb") as f:
            while True:
                f.write(b"\0" * (4 * KIB))
                f.flush()
    except OSError:
        pass
    assert os.statvfs(where).f_bavail == 0
    return filler


def open_small(small_fs: Path, clock: Clock) -> Store:
    return Store.open(
        path=small_fs / "buffer.db",
        key_file=small_fs / "buffer.key",
        gateway_id="gw-01",
        reserve_bytes=1024 * KIB,
        clock_ms=clock,
    )


@pytest.mark.integration
def test_with_the_disk_full_settle_release_evict_and_alarms_work_across_a_restart(
    small_fs: Path, clock: Clock
) -> None:
    store = open_small(small_fs, clock)
    ballast = small_fs / "buffer.db.reserve"
    assert ballast.stat().st_size == 1024 * KIB
    telemetry, _ = fill_telemetry(store)
    store.close()
    store = open_small(small_fs, clock)  # a restart keeps the reserve: the ballast is a file
    assert ballast.exists()
    filler = fill_disk(small_fs)
    try:
        with pytest.raises(BufferFullError):
            store.append(Stream.TELEMETRY, [blob()])
        leased = store.lease(max_count=200, max_bytes=1 << 30)
        assert len(leased) == 200
        store.settle(accepted=[(r.stream, r.seq) for r in leased[:150]])
        assert not ballast.exists(), "the reserve was not given back to the full disk"
        store.release([(r.stream, r.seq) for r in leased[150:]])
        assert store.append(Stream.ALARM, [b"alarm on a full disk"]) != []
        store.maintain()  # deletes delivered records while room is short: works when full
        stats = store.stats().streams
        assert stats[Stream.TELEMETRY].delivered == 0
        assert stats[Stream.TELEMETRY].refused >= 1
        assert store.flush_reports(lambda r: b'{"kind": "%s"}' % type(r).__name__.encode()) == 1
        assert store.stats().streams[Stream.TELEMETRY].refused_pending == 0
        store.close()
        store = open_small(small_fs, clock)  # restart with the disk still full
        assert store.append(Stream.ALARM, [b"alarm after the restart"]) != []
        assert store.stats().streams[Stream.TELEMETRY].refused >= 1  # persisted
    finally:
        filler.unlink(missing_ok=True)
    store.maintain()
    assert ballast.exists(), "the reserve was not taken back once space returned"
    assert store.append(Stream.TELEMETRY, [blob()]) != []
    store.close()
    assert len(telemetry) > 500
