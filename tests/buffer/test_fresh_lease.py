"""A lease of records this process just appended takes them as appended (``Core.fresh``), not
by opening and inflating what it just sealed; what it hands out is the same in every byte,
the disk is still authenticated for every record not held, and the memory is bounded."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from buffer import Store, Stream, writer
from buffer import core as core_mod

# compressible, so the store keeps it deflated and a lease hands out that form
BODY = b'{"v":{' + b",".join(b'"PT-%04d":%d' % (i, i * 7 % 500) for i in range(400)) + b"}}"


def open_store(root: Path) -> Store:
    return Store.open(path=root / "b.db", key_file=root / "b.key", gateway_id="gw")


def test_a_fresh_record_is_leased_without_opening_its_row_and_is_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_store(tmp_path) as store:
        store.append(Stream.TELEMETRY, [BODY, b"raw"])
        core = store._core
        assert len(core.fresh) == 2
        opened: list[int] = []
        real = core_mod.Core.unseal

        def counting(self: core_mod.Core, row: core_mod.Row) -> object:
            opened.append(row[2])
            return real(self, row)

        monkeypatch.setattr(core_mod.Core, "unseal", counting)
        leased = store.lease(max_count=10, max_bytes=1 << 20)
        assert opened == [] and core.fresh == {} and core.fresh_bytes == 0
        rows = core.live().execute(core_mod.SELECT_ROW + " ORDER BY seq").fetchall()
        for record, row in zip(leased, rows, strict=True):
            stored = real(core, row)  # what a lease after a restart hands out
            assert record == stored and record.payload == stored.payload
            assert record.deflated == stored.deflated  # the uplink splices these bytes
        assert leased[0].deflated is not None and leased[1].deflated is None
        store.release_all()  # leased again: from the row now
        assert [r.payload for r in store.lease(max_count=10, max_bytes=1 << 20)] == [BODY, b"raw"]
        assert opened == [1, 2]


def test_the_disk_is_still_checked_for_every_record_not_held(tmp_path: Path) -> None:
    """Corrupted after its append: this process sends what it appended (it holds it); after a
    restart the row is authenticated and quarantined, as before."""
    store = open_store(tmp_path)
    store.append(Stream.TELEMETRY, [b"one", b"two"])
    conn = sqlite3.connect(tmp_path / "b.db")
    with conn:
        sealed = conn.execute("SELECT sealed FROM records WHERE seq = 2").fetchone()[0]
        conn.execute(
            "UPDATE records SET sealed = ? WHERE seq = 2", (bytes([sealed[0] ^ 1]) + sealed[1:],)
        )
    conn.close()
    assert [r.payload for r in store.lease(max_count=10, max_bytes=1000)] == [b"one", b"two"]
    store.close()
    with open_store(tmp_path) as store:
        assert [r.payload for r in store.lease(max_count=10, max_bytes=1000)] == [b"one"]
        assert store.stats().streams[Stream.TELEMETRY].quarantined == 1


def test_held_records_are_bounded_and_the_ones_let_go_are_unsealed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(core_mod, "FRESH_MAX_BYTES", 10 * len(BODY))
    with open_store(tmp_path) as store:
        for i in range(40):  # the uplink is down: nothing is leased
            store.append(Stream.TELEMETRY, [BODY + b" %d" % i])
        core = store._core
        assert 0 < core.fresh_bytes <= 10 * len(BODY)
        assert sorted(seq for _, seq in core.fresh) == list(range(40 - len(core.fresh) + 1, 41))
        leased = store.lease(max_count=100, max_bytes=1 << 24)
        assert [r.payload for r in leased] == [BODY + b" %d" % i for i in range(40)]
        assert core.fresh == {} and core.fresh_bytes == 0


def test_what_is_evicted_rolled_back_or_kept_local_is_not_held(tmp_path: Path) -> None:
    store = Store.open(
        path=tmp_path / "b.db",
        key_file=tmp_path / "b.key",
        gateway_id="gw",
        capacity_bytes=64 << 10,
    )
    with store:
        core = store._core
        store.append(Stream.INCIDENT, [BODY])  # never leased: never held
        assert core.fresh == {}
        for _ in range(60):  # capacity evicts the oldest undelivered telemetry
            store.append(Stream.TELEMETRY, [BODY])
        kept = {seq for (_, seq) in core.fresh}
        stored = {s for (s,) in core.live().execute("SELECT seq FROM records WHERE stream = 2")}
        assert kept and kept <= stored and len(stored) < 60
        before = dict(core.fresh)

        def fail(_conn: sqlite3.Connection) -> None:
            raise RuntimeError("refused inside the transaction")

        with pytest.raises(RuntimeError):
            writer.append(core, Stream.ALARM, [b"rolled back"], None, also=fail)
        assert core.fresh == before
        assert core.live().execute("SELECT count(*) FROM records WHERE stream = 0").fetchone() == (
            0,
        )
