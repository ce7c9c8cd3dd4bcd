"""Crash safety: a writer process SIGKILLed at random points during append/lease/settle.

Each round forks a writer that opens the store and appends, leases and settles at random,
reporting on a pipe every append and settle *after* it returned (a settle with ``defer`` only
once the append or settle that wrote it returned). The parent kills it after a
random number of reports (so the kill lands somewhere inside the next operations), then
reopens the store and checks: every reported append is there with its exact payload, every
reported settle stuck, nothing is half there (every record authenticates, no quarantine), no
seq is ever repeated, and every seq up to last_seq is either stored or inside a reported gap
(an unclean close continues above the seq ledger's ceiling: ``power_loss`` gaps).
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sqlite3
from pathlib import Path

import pytest

from buffer import Store, Stream
from tests.buffer.damage import covered

ROUNDS = 200


def paths(root: Path) -> dict[str, Path]:
    return {"path": root / "b.db", "key_file": root / "b.key"}


def payload(round_no: int, counter: int) -> bytes:
    return hashlib.sha256(f"{round_no}/{counter}".encode()).digest() * (1 + counter % 5)


def writer(root: Path, round_no: int, out: int) -> None:
    """The child: random work, each completed step reported on ``out``."""
    rng = random.Random(round_no)
    store = Store.open(**paths(root), gateway_id="gw")
    counter = 0
    staged: list[tuple[Stream, int]] = []  # settled with defer: written by the next append

    def written(keys: list[tuple[Stream, int]]) -> bytes:
        return "".join(f"S {int(s)} {q}\n" for s, q in keys).encode() or b"-\n"

    while True:
        op = rng.random()
        if op < 0.6:
            stream = rng.choice(list(Stream))
            batch = []
            for _ in range(rng.randint(1, 5)):
                batch.append(payload(round_no, counter))
                counter += 1
            seqs = store.append(stream, batch)
            lines = [f"A {int(stream)} {q} {p.hex()}\n" for q, p in zip(seqs, batch, strict=True)]
            os.write(out, "".join(lines).encode() + (written(staged) if staged else b""))
            staged = []
        elif op < 0.9:
            leased = store.lease(max_count=rng.randint(1, 8), max_bytes=4096)
            again = [f"X {int(r.stream)} {r.seq}\n" for r in leased if (r.stream, r.seq) in staged]
            accepted = [(r.stream, r.seq) for r in leased if rng.random() < 0.7]
            if rng.random() < 0.5:
                store.settle(accepted=accepted, defer=True)
                staged += accepted
                os.write(out, "".join(again).encode() or b"-\n")
            else:
                store.settle(accepted=accepted)
                os.write(out, "".join(again).encode() + written(staged + accepted))
                staged = []
        else:
            store.release_all()


def run_round(root: Path, round_no: int, stop_after: int) -> list[str]:
    """Fork a writer, kill it after ``stop_after`` report lines, return every line it wrote."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        try:
            writer(root, round_no, w)
        finally:
            os._exit(1)
    os.close(w)
    lines: list[str] = []
    with os.fdopen(r) as reader:
        while len(lines) < stop_after:
            line = reader.readline()
            if not line:
                break
            lines.append(line)
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status), f"round {round_no}: the writer died on its own ({status})"
        lines.extend(reader.readlines())
    return lines


@pytest.mark.slow
@pytest.mark.soak
@pytest.mark.timeout(900)  # each round fsyncs the ledger and the WAL a few times
def test_a_writer_killed_at_random_points_loses_no_returned_append_and_repeats_no_seq(
    tmp_path: Path,
) -> None:
    kill_rounds(tmp_path, ROUNDS)


def test_a_writer_killed_a_few_times_loses_nothing_and_repeats_no_seq(tmp_path: Path) -> None:
    kill_rounds(tmp_path, 8)


def kill_rounds(tmp_path: Path, rounds: int) -> None:
    rng = random.Random(20240601)
    appended: dict[tuple[int, int], bytes] = {}
    settled: set[tuple[int, int]] = set()
    for round_no in range(rounds):
        for line in run_round(tmp_path, round_no, rng.randint(0, 12)):
            kind, *rest = line.split()
            if kind == "A":
                key = (int(rest[0]), int(rest[1]))
                assert key not in appended, f"seq repeated: {key}"
                appended[key] = bytes.fromhex(rest[2])
            elif kind == "S":
                settled.add((int(rest[0]), int(rest[1])))
            elif kind == "X":
                raise AssertionError(f"a staged delivery was leased again: {rest}")
        with Store.open(**paths(tmp_path), gateway_id="gw") as store:
            stats = store.stats()
            assert store.recovered_from is None
            assert stats.quarantine_rows == 0
            for stream in Stream:
                last = stats.streams[stream].last_seq
                records = store.resend(stream, 1, last)
                got = {r.seq: r.payload for r in records}
                assert covered(store, stream, set(got), last) == []
                for (s, seq), data in appended.items():
                    if s == stream:
                        assert got.get(seq) == data, f"round {round_no}: {stream.name} {seq}"
        conn = sqlite3.connect(tmp_path / "b.db")
        states = {(s, q): st for s, q, st in conn.execute("SELECT stream, seq, state FROM records")}
        conn.close()
        assert all(states[k] == 1 for k in settled)
    assert len(appended) > rounds  # the test did real work
    assert settled
