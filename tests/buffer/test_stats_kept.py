"""The live store's statistics come from counts it keeps in memory (no scan of ``records``):
they must equal the full scan a reader of the file makes, through appends, deliveries (at once
and deferred), dead letters, capacity eviction, retention, quarantine and reopening."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

from buffer import Store, Stream
from buffer.stats import query_stats


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000_000

    def __call__(self) -> int:
        return self.now


def scanned(store: Store, root: Path) -> list[tuple[int, int, int, int, int, int | None]]:
    conn = sqlite3.connect(root / "b.db")
    try:
        full = query_stats(conn, leased={}, capacity_bytes=0, active_key_id=0, key_ids=())
    finally:
        conn.close()
    return [
        (int(s), st.undelivered, st.delivered, st.dead, st.bytes, st.oldest_undelivered_ms)
        for s, st in sorted(full.streams.items())
    ]


def kept(store: Store) -> list[tuple[int, int, int, int, int, int | None]]:
    return [
        (int(s), st.undelivered, st.delivered, st.dead, st.bytes, st.oldest_undelivered_ms)
        for s, st in sorted(store.stats().streams.items())
    ]


def test_kept_counts_equal_a_full_scan_through_everything_that_changes_records(
    tmp_path: Path,
) -> None:
    rng = random.Random(7)
    clock = Clock()

    def open_store() -> Store:
        return Store.open(
            path=tmp_path / "b.db", key_file=tmp_path / "b.key", gateway_id="gw",
            capacity_bytes=96 * 1024, retention_days=1.0, clock_ms=clock,
        )  # fmt: skip

    store = open_store()
    try:
        for step in range(400):
            op = rng.random()
            clock.now += rng.randint(0, 3_600_000)
            if op < 0.45:
                stream = rng.choice([Stream.TELEMETRY] * 4 + [Stream.EVENT, Stream.ALARM])
                store.append(stream, [rng.randbytes(rng.randint(50, 3000))] * rng.randint(1, 6))
            elif op < 0.75:
                leased = store.lease(max_count=rng.randint(1, 9), max_bytes=1 << 20)
                keys = [(r.stream, r.seq) for r in leased]
                cut = rng.randint(0, len(keys))
                store.settle(accepted=keys[:cut], defer=rng.random() < 0.5)
                if rng.random() < 0.3:
                    store.settle(rejected=[(s, q, "0x87") for s, q in keys[cut:]])
                else:
                    store.release(keys[cut:])
            elif op < 0.85:
                store.maintain()  # retention (a day) and capacity
            elif op < 0.9:  # a record that fails authentication: quarantined when leased
                conn = store._core.live()
                conn.execute(
                    "UPDATE records SET nonce = zeroblob(12) WHERE id = "
                    "(SELECT id FROM records WHERE state = 0 ORDER BY random() LIMIT 1)"
                )
                store.lease(max_count=50, max_bytes=1 << 22)
                store.release_all()
            elif op < 0.95:
                store.close()
                store = open_store()
            else:
                store.release_all()
            assert kept(store) == scanned(store, tmp_path), f"step {step}"
        stats = store.stats()
        assert stats.quarantine_rows > 0
        assert sum(st.evicted for st in stats.streams.values()) > 0
        assert sum(st.dead for st in stats.streams.values()) > 0
    finally:
        store.close()
