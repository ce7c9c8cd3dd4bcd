"""Model-based test: the Store against a plain in-memory list model.

The model keeps, per stream, a list of [seq, payload, state, created_ms] and a set of leased
keys; every operation of the store is mirrored and compared, including across reopen (leases
forgotten, everything else kept). Appends may carry their own ``created_ms`` (a clock that
jumped, data stamped by a device) so "live" telemetry is not always the highest seqs, and
leases may put live telemetry (created at or after ``live_since_ms``) before the backlog.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from buffer import Store, Stream
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
