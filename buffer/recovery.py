"""Accounting for every seq when a store opens: salvage what a loss left readable, continue
above the ledger's ceiling, and report each range that cannot be accounted for.

Invariants:
1. No seq is ever reissued: after any open the next seq of every stream is above both the
   ledger's ceiling and everything the database (and salvage) knows. A clean ledger (the
   store was closed) with a database that holds its last seqs continues without a gap.
2. Every seq that will never be sent is inside one reported :class:`SeqGap`, except those
   settled before the loss (below the ledger's ``low``) or whose drop was already reported.
   Reasons: a database moved aside or lost (``buffer_corrupt``), WAL frames SQLite dropped or
   durable records missing (``wal_truncated``), a store not closed (``power_loss``), a ledger
   missing or damaged while the database has history (``ledger_rebuilt``: a margin of
   :data:`LEDGER_MARGIN` seqs above the known maxima).
3. Salvaged records are inserted with their original stream, seq, creation time, key and
   state: undelivered ones are queued again (the platform never saw them), delivered ones
   kept as the local record. Inserting, the reports and the new ``last_seq`` are one
   transaction; the ledger is written after it commits (a crash in between re-reports at the
   next open, which still continues above the old ceiling).
4. A database from before the ledger (:attr:`buffer.schema.Opened.ledger_era` false) starts
   its ledger at the database's maxima without a gap.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from buffer.core import Core
from buffer.ledger import Ledger, LedgerDamaged, Mark
from buffer.pages import wal_frames
from buffer.record import Stream
from buffer.reports import Corrupt, GapReason, SeqGap, encode_report
from buffer.salvage import Salvaged, Scan, scan, scan_file
from buffer.schema import Opened

__all__ = ["LEDGER_MARGIN", "OpenReport", "reconcile"]

LEDGER_MARGIN = 100_000


@dataclass(frozen=True, slots=True)
class OpenReport:
    """How an open went: ``ledger`` was ``ok``, ``created`` (fresh store or upgrade) or
    ``rebuilt``; ``clean`` the previous run closed the store; the gaps and corruption found
    (also queued as reports for the platform, see :meth:`buffer.Store.flush_reports`)."""

    recovered_from: str | None
    ledger: Literal["ok", "created", "rebuilt"]
    clean: bool
    gaps: tuple[SeqGap, ...]
    corrupt: Corrupt | None


def _missing(present: Iterable[int], lo: int, hi: int) -> list[tuple[int, int]]:
    """Ranges of ``lo..hi`` not in ``present``."""
    out: list[tuple[int, int]] = []
    nxt = lo
    for q in sorted(q for q in set(present) if lo <= q <= hi):
        if q > nxt:
            out.append((nxt, q - 1))
        nxt = q + 1
    if nxt <= hi:
        out.append((nxt, hi))
    return out


def _salvage(core: Core, opened: Opened) -> tuple[Scan | None, Literal["database", "wal"] | None]:
    if opened.moved_to is not None:
        moved = opened.moved_to
        return scan_file(moved, moved.with_name(moved.name + "-wal"), core.keys, core.gateway), (
            "database"
        )
    if opened.wal_snapshot is None or opened.wal_frames is None:
        return None, None
    _, frames = wal_frames(opened.wal_snapshot)
    if len(frames) <= max(opened.wal_frames, 0):
        return None, None
    with core.path.open("rb") as f:
        try:
            image: bytes | mmap.mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:
            image = b""
        found = scan(
            image,
            opened.wal_snapshot,
            core.keys,
            core.gateway,
            wal_from=opened.wal_frames,
            include_db=False,
        )
        if isinstance(image, mmap.mmap):
            image.close()
    return found, "wal"


def reconcile(
    core: Core,
    opened: Opened,
    previous: Ledger | LedgerDamaged | None,
    *,
    detected: Literal["open", "running"],
) -> tuple[Ledger, OpenReport]:
    """Salvage, decide each stream's new ceiling and gaps, write them (invariant 3)."""
    found, cause = _salvage(core, opened)
    ledger = previous if isinstance(previous, Ledger) else None
    db_lost = (
        opened.moved_to is None
        and opened.version_before == 0
        and ledger is not None
        and any(m.reserved for m in ledger.marks.values())
    )
    if db_lost:
        cause = "database"
    upgrade = previous is None and opened.version_before > 0 and not opened.ledger_era
    fresh = previous is None and opened.version_before == 0 and opened.moved_to is None
    status: Literal["ok", "created", "rebuilt"] = (
        "ok" if ledger else ("created" if upgrade or fresh else "rebuilt")
    )
    clean = ledger.clean if ledger else upgrade
    inserted = {0: 0, 1: 0}
    rows = []
    if found is not None:
        for rec in found.records.values():
            if rec.seq > core.last_seq[rec.stream] or opened.moved_to is not None:
                rows.append(rec)
                inserted[rec.state != 0] += 1
    gaps: list[SeqGap] = []
    marks: dict[Stream, Mark] = {}
    undelivered_lost = 0
    for stream in Stream:
        db_last = core.last_seq[stream]
        present = [r.seq for r in rows if r.stream is stream]
        known = max([db_last, *present, found.last_seq[stream] if found else 0])
        old = ledger.marks[stream] if ledger else None
        rebuilt = status == "rebuilt" or (old is not None and known > old.reserved)
        # [start, top]: seqs that may have been used and are not accounted for.
        top = known if rebuilt or old is None else old.reserved
        ceiling = known + LEDGER_MARGIN if rebuilt else top
        reason: GapReason
        start = db_last + 1
        if cause == "database":
            start, reason = (old.low if old else 1), "buffer_corrupt"
        elif cause == "wal" or (old is not None and old.durable > db_last):
            reason = "wal_truncated"
        elif clean:  # closed cleanly, yet the database lacks seqs it had: it was replaced
            reason = "buffer_corrupt"
        else:
            reason = "power_loss"
        if old is not None or cause is not None:
            assigned = max(known, old.durable if old else 0)
            for lo, hi in _missing(present, start, top):
                gaps.append(SeqGap(stream=stream, from_seq=lo, to_seq=hi, reason=reason))
                if cause is not None:
                    undelivered_lost += max(0, min(hi, assigned) - lo + 1)
        if rebuilt:
            gaps.append(
                SeqGap(stream=stream, from_seq=known + 1, to_seq=ceiling, reason="ledger_rebuilt")
            )
        base = max(ceiling, db_last)
        marks[stream] = Mark(reserved=base, durable=0, low=old.low if old else 1)
    corrupt = None
    if cause is not None:
        corrupt = Corrupt(
            cause=cause,
            moved_to=None if opened.moved_to is None else str(opened.moved_to),
            detected=detected,
            salvaged=inserted[0],
            delivered_kept=inserted[1],
            undelivered_lost=undelivered_lost,
            delivered_lost=sum(1 for st in (found.failed.values() if found else ()) if st != 0),
            pages=found.pages if found else 0,
            pages_skipped=found.pages_skipped if found else 0,
        )
    reports: list[Corrupt | SeqGap] = [*([corrupt] if corrupt else []), *gaps]
    moved = any(m.reserved > core.last_seq[s] for s, m in marks.items())
    if rows or reports or moved:
        _record(core, rows, marks, reports)
    new = Ledger(path=core.ledger.path, gateway=core.gateway, marks=marks, clean=False)
    report = OpenReport(
        recovered_from=None if opened.moved_to is None else str(opened.moved_to),
        ledger=status,
        clean=clean,
        gaps=tuple(gaps),
        corrupt=corrupt,
    )
    return new, report


def _row(r: Salvaged) -> tuple[object, ...]:
    return (
        r.stream,
        r.seq,
        r.created_ms,
        r.key_id,
        r.nonce,
        r.sealed,
        r.size,
        r.state,
        r.reason,
        r.settled_ms,
    )


def _record(
    core: Core, rows: list[Salvaged], marks: dict[Stream, Mark], reports: list[Corrupt | SeqGap]
) -> None:
    with core.transaction("recording the recovery") as conn:
        conn.executemany(
            "INSERT OR IGNORE INTO records(stream, seq, created_ms, key_id, nonce, sealed, size,"
            " state, reason, settled_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [_row(r) for r in rows],
        )
        for stream, mark in marks.items():
            conn.execute(
                "UPDATE streams SET last_seq = max(last_seq, ?) WHERE stream = ?",
                (mark.reserved, stream),
            )
        conn.executemany(
            "INSERT INTO reports(body) VALUES (?)", [(encode_report(r),) for r in reports]
        )
