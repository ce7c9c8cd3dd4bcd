"""The SQL of settling the broker's answers: shared by :func:`buffer.acks.settle` and by the
append transaction, which carries the answers staged since the last write (Core.staged).

Only ``state`` changes: a row of the same size is rewritten in place, the sealed payload's
overflow pages untouched (a settled_ms in the row would grow it, and SQLite would write the
whole record again); the time goes to ``settled``, one row per run of consecutive seqs.
Only undelivered records change state.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from buffer.record import Stream

__all__ = ["DEAD", "DELIVERED", "PENDING", "Changed", "apply", "seq_runs", "write"]

PENDING, DELIVERED, DEAD = 0, 1, 2


def seq_runs(keys: Iterable[tuple[Stream, int]]) -> list[tuple[int, int, int]]:
    """``(stream, first, last)`` for each run of consecutive seqs among ``keys``."""
    runs: list[list[int]] = []
    for stream, seq in sorted({(int(s), q) for s, q in keys}):
        last = runs[-1] if runs else None
        if last is not None and last[0] == stream and last[2] + 1 == seq:
            last[2] = seq
        else:
            runs.append([stream, seq, seq])
    return [(s, lo, hi) for s, lo, hi in runs]


Changed = dict[tuple[Stream, int], int]
"""Records that changed state, by (stream, new state): apply to ``Core.counts`` after commit."""


def write(
    conn: sqlite3.Connection,
    ok: Sequence[tuple[Stream, int]],
    bad: Sequence[tuple[Stream, int, str]],
    now_ms: int,
) -> Changed:
    """Inside a transaction: mark ``ok`` delivered and ``bad`` dead with its reason; returns
    how many records each changed (unknown or already settled ones change nothing)."""
    runs = seq_runs(ok)
    changed: Changed = {}
    # PUBACKs come back mostly in seq order: one statement per run of consecutive seqs.
    for stream in sorted({s for s, _, _ in runs}):
        cur = conn.executemany(
            "UPDATE records SET state = ? WHERE stream = ? AND seq BETWEEN ? AND ? AND state = ?",
            [(DELIVERED, s, lo, hi, PENDING) for s, lo, hi in runs if s == stream],
        )
        if cur.rowcount > 0:
            changed[(Stream(stream), DELIVERED)] = cur.rowcount
    conn.executemany(
        "INSERT OR REPLACE INTO settled(stream, first_seq, last_seq, settled_ms)"
        " VALUES (?, ?, ?, ?)",
        [(s, lo, hi, now_ms) for s, lo, hi in runs],
    )
    for s in {s for s, _, _ in runs}:  # ranges of records retention already removed
        conn.execute(
            "DELETE FROM settled WHERE stream = ?1 AND last_seq <"
            " (SELECT min(seq) FROM records WHERE stream = ?1)",
            (s,),
        )
    for s, q, reason in bad:
        cur = conn.execute(
            "UPDATE records SET state = ?, reason = ?, settled_ms = ?"
            " WHERE stream = ? AND seq = ? AND state = ?",
            (DEAD, reason, now_ms, s, q, PENDING),
        )
        if cur.rowcount:
            conn.execute("UPDATE streams SET dead = dead + 1 WHERE stream = ?", (s,))
            changed[(Stream(s), DEAD)] = changed.get((Stream(s), DEAD), 0) + 1
    return changed


def apply(counts: dict[tuple[Stream, int], int], changed: Changed) -> None:
    """After the commit: move what :func:`write` changed out of PENDING in ``counts``."""
    for (stream, state), n in changed.items():
        counts[(stream, state)] = counts.get((stream, state), 0) + n
        counts[(stream, PENDING)] = counts.get((stream, PENDING), 0) - n
