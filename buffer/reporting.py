"""The store's pending reports (gaps, corruption, refused telemetry) and turning them into
events: the ``reports`` rows and the refusal counts of ``streams`` (and of
``Core.unsaved_refusals``), cleared in the same transaction that appends their events."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from buffer import writer
from buffer.core import Core
from buffer.record import Stream
from buffer.reports import Refused, Report, decode_report

__all__ = ["flush", "pending"]


def pending(core: Core) -> list[tuple[int | None, Report]]:
    """Every pending report, with its ``reports`` row id (None: a refusal summed from
    ``streams`` and what is not saved yet)."""
    conn = core.live()
    out: list[tuple[int | None, Report]] = [
        (i, decode_report(body)) for i, body in conn.execute("SELECT id, body FROM reports")
    ]
    rows = conn.execute(
        "SELECT stream, refused_pending, refused_first_ms, refused_last_ms, refused_reason"
        " FROM streams WHERE refused_pending > 0"
    ).fetchall()
    summed = {Stream(s): (n, a, b, r) for s, n, a, b, r in rows}
    for stream, (n, a, b, r) in core.unsaved_refusals.items():
        m, a0, b0, _ = summed.get(stream, (0, a, b, r))
        summed[stream] = (n + m, min(a, a0), max(b, b0), r)
    for stream, (n, a, b, r) in sorted(summed.items()):
        out.append((None, Refused(stream=stream, count=n, first_ts=a, last_ts=b, reason=r or "")))
    return out


def flush(core: Core, encode: Callable[[Report], bytes]) -> int:
    """Append ``encode(report)`` for every pending report as events and clear them, in one
    transaction; returns how many. Raises as :func:`buffer.writer.append` does."""
    reports = pending(core)
    if not reports:
        return 0
    ids = [(i,) for i, _ in reports if i is not None]
    unsaved = dict(core.unsaved_refusals)

    def clear(c: sqlite3.Connection) -> None:
        c.executemany("DELETE FROM reports WHERE id = ?", ids)
        c.execute(
            "UPDATE streams SET refused_pending = 0, refused_first_ms = NULL,"
            " refused_last_ms = NULL, refused_reason = NULL"
        )
        for stream, (n, _, _, _) in unsaved.items():
            c.execute("UPDATE streams SET refused = refused + ? WHERE stream = ?", (n, stream))

    writer.append(core, Stream.EVENT, [encode(r) for _, r in reports], None, also=clear)
    for stream in unsaved:
        core.unsaved_refusals.pop(stream, None)
    return len(reports)
