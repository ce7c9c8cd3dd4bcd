"""The store's reports about itself, as agent events: ``seq_gap``, ``telemetry_refused`` and
``buffer_corrupt`` (with counts). The buffer hands out plain data and never builds a payload;
this module is the one place that turns its reports into event bodies and log lines.

Invariants: every report becomes exactly one event (the store clears a report in the same
transaction that appends its event, see :meth:`buffer.Store.flush_reports`); every report is
also logged once, with the same fields, when it is turned into an event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from agent.codec import event_body
from agent.logs import kv
from buffer import Corrupt, Refused, Report, SeqGap

__all__ = ["encoder"]

log = logging.getLogger("safeedge.pipeline")


def _fields(report: Report) -> tuple[str, dict[str, object]]:
    if isinstance(report, SeqGap):
        return "seq_gap", {
            "stream": report.stream.wire_name,
            "from_seq": report.from_seq,
            "to_seq": report.to_seq,
            "reason": report.reason,
        }
    if isinstance(report, Refused):
        return "telemetry_refused", {
            "count": report.count,
            "first_ts": report.first_ts,
            "last_ts": report.last_ts,
            "reason": report.reason,
        }
    assert isinstance(report, Corrupt)
    return "buffer_corrupt", {
        "moved_to": report.moved_to,
        "cause": report.cause,
        "detected": report.detected,
        "salvaged": report.salvaged,
        "delivered_kept": report.delivered_kept,
        "undelivered_lost": report.undelivered_lost,
        "delivered_lost": report.delivered_lost,
        "pages": report.pages,
        "pages_skipped": report.pages_skipped,
    }


def encoder(clock_ms: Callable[[], int]) -> Callable[[Report], bytes]:
    """What :meth:`buffer.Store.flush_reports` needs: report → event body (logged too)."""

    def encode(report: Report) -> bytes:
        kind, fields = _fields(report)
        level = logging.WARNING if kind == "telemetry_refused" else logging.ERROR
        log.log(level, kv(kind, **fields))
        return event_body(kind, clock_ms(), fields)

    return encode
