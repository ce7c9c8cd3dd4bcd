"""Model-based test: the Store against a plain in-memory list model.

The model keeps, per stream, a list of [seq, payload, state, created_ms] and a set of leased
keys; every operation of the store is mirrored and compared, including across reopen (leases
forgotten, everything else kept; a clean reopen continues without a gap). Appends may carry
their own ``created_ms`` (a clock that jumped, data stamped by a device) so "live" telemetry
is not always the highest seqs, and leases may put live telemetry (created at or after
``live_since_ms``) before the backlog.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from buffer import SeqGap, Store, Stream
from tests.buffer.conftest import Clock

PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
Key = tuple[Stream, int]

streams = st.sampled_from(list(Stream))
payloads = st.lists(st.binary(max_size=60), max_size=4)


class StoreModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.clock = Clock()
        self.records: dict[Stream, list[list[object]]] = {s: [] for s in Stream}
        self.last_seq = dict.fromkeys(Stream, 0)
        self.leased: set[Key] = set()
        self.store = self.open()

    def open(self) -> Store:
        root = Path(self.tmp.name)
        return Store.open(
            path=root / "b.db", key_file=root / "k", gateway_id="gw", clock_ms=self.clock
        )

    def teardown(self) -> None:
        self.store.close()
        self.tmp.cleanup()

    def state(self, key: Key) -> str | None:
        for seq, _, state, _ in self.records[key[0]]:
            if seq == key[1]:
                return str(state)
        return None

    def set_state(self, key: Key, state: str) -> None:
        for rec in self.records[key[0]]:
            if rec[0] == key[1]:
                rec[2] = state

    @rule(stream=streams, batch=payloads, stamp=st.none() | st.integers(-1000, 1000))
    def append(self, stream: Stream, batch: list[bytes], stamp: int | None) -> None:
        created = self.clock() + (stamp or 0)
        seqs = self.store.append(stream, batch, created_ms=None if stamp is None else created)
        first = self.last_seq[stream] + 1
        assert seqs == list(range(first, first + len(batch)))
        for seq, payload in zip(seqs, batch, strict=True):
            self.records[stream].append([seq, payload, PENDING, created])
        self.last_seq[stream] += len(batch)
        self.clock.advance(7)

    @rule(ms=st.integers(0, 1000))
    def time_passes(self, ms: int) -> None:
        self.clock.advance(ms)

    def lease_order(self, live_since: int | None) -> list[tuple[Stream, list[object]]]:
        """Alarms, events, then telemetry, each by seq; with ``live_since`` the telemetry
        created at or after it before the older telemetry."""
        order = [(s, r) for s in (Stream.ALARM, Stream.EVENT) for r in self.records[s]]
        telemetry = self.records[Stream.TELEMETRY]
        if live_since is None:
            return order + [(Stream.TELEMETRY, r) for r in telemetry]
        live = [(Stream.TELEMETRY, r) for r in telemetry if r[3] >= live_since]  # type: ignore[operator]
        old = [(Stream.TELEMETRY, r) for r in telemetry if r[3] < live_since]  # type: ignore[operator]
        return order + live + old

    @rule(max_count=st.integers(1, 6), max_bytes=st.integers(1, 150), data=st.data())
    def lease(self, max_count: int, max_bytes: int, data: st.DataObject) -> None:
        # The split point between live and backlog: none, or near a telemetry record's stamp.
        stamps = sorted({int(r[3]) for r in self.records[Stream.TELEMETRY]})  # type: ignore[call-overload]
        live_since = data.draw(
            st.none()
            | st.builds(int.__add__, st.sampled_from(stamps or [self.clock()]), st.integers(-1, 1))
        )
        expected: list[tuple[Stream, int, bytes]] = []
        total = 0
        for stream, (seq, payload, state, _) in self.lease_order(live_since):
            assert isinstance(seq, int)
            assert isinstance(payload, bytes)
            if state != PENDING or (stream, seq) in self.leased:
                continue
            if len(expected) == max_count or (expected and total + len(payload) > max_bytes):
                break
            expected.append((stream, seq, payload))
            total += len(payload)
        got = self.store.lease(max_count=max_count, max_bytes=max_bytes, live_since_ms=live_since)
        assert [(r.stream, r.seq, r.payload) for r in got] == expected
        self.leased.update((s, q) for s, q, _ in expected)

    @precondition(lambda self: self.leased)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        chosen = data.draw(st.sets(st.sampled_from(sorted(self.leased))))
        self.store.release(chosen)
        self.leased -= chosen

    @rule()
    def release_all(self) -> None:
        self.store.release_all()
        self.leased.clear()

    @rule(data=st.data())
    def settle(self, data: st.DataObject) -> None:
        candidates = st.tuples(streams, st.integers(1, max(self.last_seq.values()) + 2))
        accepted = data.draw(st.lists(candidates, max_size=4))
        rejected = data.draw(st.lists(candidates, max_size=3))
        self.store.settle(accepted=accepted, rejected=[(s, q, "no") for s, q in rejected])
        for key in accepted:
            if self.state(key) == PENDING:
                self.set_state(key, DELIVERED)
        for key in rejected:
            if self.state(key) == PENDING:
                self.set_state(key, DEAD)
        self.leased -= set(accepted) | set(rejected)

    @rule(data=st.data())
    def settle_deferred(self, data: st.DataObject) -> None:
        # staged only; the invariant's stats() writes them, as the next append would
        candidates = st.tuples(streams, st.integers(1, max(self.last_seq.values()) + 2))
        accepted = data.draw(st.lists(candidates, max_size=4))
        self.store.settle(accepted=accepted, defer=True)
        for key in accepted:
            if self.state(key) == PENDING:
                self.set_state(key, DELIVERED)
        self.leased -= set(accepted)

    @rule(stream=streams, lo=st.integers(0, 12), span=st.integers(0, 12))
    def resend(self, stream: Stream, lo: int, span: int) -> None:
        got = self.store.resend(stream, lo, lo + span)
        expected = [(q, p) for q, p, _, _ in self.records[stream] if lo <= q <= lo + span]  # type: ignore[operator]
        assert [(r.seq, r.payload) for r in got] == expected

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = self.open()
        self.leased.clear()

    @invariant()
    def stats_agree_with_the_model(self) -> None:
        stats = self.store.stats()
        for stream in Stream:
            s = stats.streams[stream]
            states = [r[2] for r in self.records[stream]]
            assert s.last_seq == self.last_seq[stream]
            assert (s.undelivered, s.delivered, s.dead) == (
                states.count(PENDING),
                states.count(DELIVERED),
                states.count(DEAD),
            )
            assert s.dead_total == states.count(DEAD)
            assert s.leased == sum(1 for k in self.leased if k[0] == stream)
            assert s.evicted == s.quarantined == 0
        assert stats.bytes == sum(s.bytes for s in stats.streams.values())


StoreModel.TestCase.settings = settings(
    max_examples=60, stateful_step_count=25, deadline=None, database=None
)
test_the_store_behaves_like_the_list_model = StoreModel.TestCase


class LedgerModel(RuleBasedStateMachine):
    """Seqs against everything that can happen to the files: clean reopen, crash (the files as
    the page cache holds them), power cut (the WAL cut anywhere after its last fsync), a lost
    or damaged ledger, a lost database. Invariants: a seq is never issued twice; a record that
    was leased ("published") and not settled is back with its payload unless the database
    itself was lost; every issued, unsettled seq is back or inside a reported gap."""

    def __init__(self) -> None:
        super().__init__()
        # A tmpfs when there is one: the files and their damage are real, the fsyncs cheap
        # (crashes and power cuts are emulated by copying files, not by the disk).
        shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.tmp = tempfile.TemporaryDirectory(dir=shm)
        self.root = Path(self.tmp.name)
        self.generation = 0
        self.issued: dict[Key, bytes] = {}
        self.settled: set[Key] = set()
        self.published: set[Key] = set()
        self.gaps: list[SeqGap] = []
        self.db_lost_since: set[Key] = set()
        self.durable_wal = 0
        self.store = self.open()

    def dir(self) -> Path:
        return self.root / str(self.generation)

    def open(self) -> Store:
        store = Store.open(
            path=self.dir() / "b.db", key_file=self.root / "k", gateway_id="gw", reserve_bytes=0
        )
        self.collect(store)
        return store

    def collect(self, store: Store) -> None:
        """Take the open's reports into the model (and flush them: they are events now)."""
        before = store.stats().streams[Stream.EVENT].last_seq
        self.gaps += [r for r in store.pending_reports() if isinstance(r, SeqGap)]
        store.flush_reports(lambda r: b"report " + repr(r).encode())
        for rec in store.resend(Stream.EVENT, before + 1, 1 << 40):
            key = (Stream.EVENT, rec.seq)
            assert key not in self.issued, f"seq reissued: {key}"
            self.issued[key] = rec.payload
        self.durable_wal = self.wal_size()

    def wal_size(self) -> int:
        wal = self.dir() / "b.db-wal"
        return wal.stat().st_size if wal.exists() else 0

    def teardown(self) -> None:
        self.store.close()
        self.tmp.cleanup()

    @rule(
        stream=streams, batch=st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=4)
    )
    def append(self, stream: Stream, batch: list[bytes]) -> None:
        for seq, payload in zip(self.store.append(stream, batch), batch, strict=True):
            assert (stream, seq) not in self.issued, f"seq reissued: {stream.name} {seq}"
            self.issued[(stream, seq)] = payload
        if stream is Stream.ALARM:
            self.durable_wal = self.wal_size()

    @rule(n=st.integers(1, 8), settle=st.booleans())
    def publish(self, n: int, settle: bool) -> None:
        leased = self.store.lease(max_count=n, max_bytes=1 << 20)
        self.durable_wal = self.wal_size()
        keys = [(r.stream, r.seq) for r in leased]
        self.published.update(keys)
        if settle:
            self.store.settle(accepted=keys)
            self.settled.update(keys)

    def move_to(self, wal_cut: int | None, *, keep_db: bool = True, ledger: str = "keep") -> None:
        """The files of the running store, as a crash leaves them, become the next directory."""
        src = self.dir()
        self.generation += 1
        dst = self.dir()
        dst.mkdir(mode=0o700)
        for name in ("b.db", "b.db-wal", "b.db.ledger"):
            if not (src / name).exists() or (name != "b.db.ledger" and not keep_db):
                continue
            if name == "b.db.ledger" and ledger == "lose":
                continue
            data = bytearray((src / name).read_bytes())
            if name == "b.db-wal" and wal_cut is not None:
                data = data[:wal_cut]
            if name == "b.db.ledger" and ledger == "damage":
                data[10] ^= 0xFF
                data[4096 + 10] ^= 0xFF
            fd = os.open(dst / name, os.O_WRONLY | os.O_CREAT, 0o600)
            os.write(fd, bytes(data))
            os.close(fd)
        self.store.close()
        self.store = self.open()

    @rule()
    def clean_reopen(self) -> None:
        self.store.close()
        self.store = self.open()

    @rule()
    def crash(self) -> None:
        self.move_to(None)

    @rule(data=st.data())
    def power_cut(self, data: st.DataObject) -> None:
        frame = 4096 + 24
        size = self.wal_size()
        durable = max(0, self.durable_wal - 32) // frame
        cut = data.draw(st.integers(durable, max(durable, (size - 32) // frame)))
        self.move_to(32 + cut * frame if size else None)

    @rule(how=st.sampled_from(["lose", "damage"]))
    def ledger_trouble(self, how: str) -> None:
        self.move_to(None, ledger=how)

    @rule()
    def database_lost(self) -> None:
        self.db_lost_since |= set(self.issued)
        self.move_to(None, keep_db=False)

    @invariant()
    def every_seq_is_back_or_explained(self) -> None:
        for stream in Stream:
            last = self.store.stats().streams[stream].last_seq
            back = {r.seq: r.payload for r in self.store.resend(stream, 1, last)}
            for (s, seq), payload in self.issued.items():
                if s is not stream:
                    continue
                if seq in back:
                    assert back[seq] == payload, f"{s.name} {seq} came back with other content"
                    continue
                in_gap = any(g.stream is s and g.from_seq <= seq <= g.to_seq for g in self.gaps)
                if (s, seq) in self.published and (s, seq) not in self.db_lost_since:
                    raise AssertionError(f"published {s.name} {seq} lost")
                if (s, seq) not in self.settled:
                    assert in_gap, f"{s.name} {seq} missing and not inside any gap"


LedgerModel.TestCase.settings = settings(
    max_examples=40, stateful_step_count=25, deadline=None, database=None
)
test_seqs_are_never_reused_whatever_happens_to_the_files = LedgerModel.TestCase
