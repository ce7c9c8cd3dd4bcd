"""What the store has to tell the platform about itself, as plain data (the buffer never builds
a payload: the agent encodes each report as an event body).

Invariants:
- A report is persisted in the database's ``reports`` table in the same transaction as the
  change it describes (gaps and salvage at open, a corruption found while running), and
  removed only in the transaction that appends the events the agent encoded from it
  (:meth:`buffer.Store.flush_reports`): a crash in between re-reports, never loses a report.
- Refused telemetry is not one report per refusal: refusals are summed per stream in the
  ``streams`` row (count, first and last creation time, reason) and become one
  :class:`Refused` when flushed; the persistent total stays in ``StreamStats.refused``.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from buffer.record import Stream

__all__ = ["Corrupt", "GapReason", "Refused", "Report", "SeqGap", "decode_report", "encode_report"]

GapReason = Literal["power_loss", "buffer_corrupt", "wal_truncated", "ledger_rebuilt"]


class SeqGap(msgspec.Struct, frozen=True, tag="seq_gap", kw_only=True):
    """Seqs ``from_seq..to_seq`` (inclusive) of ``stream`` will never be sent and may never
    have been used: the platform should not wait for them. ``reason``: ``power_loss`` (the
    store was not closed: records past the last durable commit may be lost), ``wal_truncated``
    (the write-ahead log lost committed frames), ``buffer_corrupt`` (the database was moved
    aside; the range holds what salvage could not recover), ``ledger_rebuilt`` (the seq ledger
    was missing or damaged: a safety margin above the database's maxima)."""

    stream: Stream
    from_seq: int
    to_seq: int
    reason: GapReason


class Refused(msgspec.Struct, frozen=True, tag="telemetry_refused", kw_only=True):
    """``count`` records of ``stream`` created ``first_ts..last_ts`` (UTC ms) were refused (not
    stored, no seq spent) because ``reason`` (``disk_full``: the room left was the reserve)."""

    stream: Stream
    count: int
    first_ts: int
    last_ts: int
    reason: str


class Corrupt(msgspec.Struct, frozen=True, tag="buffer_corrupt", kw_only=True):
    """The database (``cause = "database"``: moved to ``moved_to``) or its WAL (``"wal"``: the
    file stays) was damaged, found at ``detected`` (``open`` or ``running``). ``salvaged``
    undelivered records were recovered and queued again with their original seqs;
    ``delivered_kept`` delivered ones kept as the local record. ``undelivered_lost`` counts the
    seqs that were assigned but could not be recovered and were not known delivered (their
    ranges are ``buffer_corrupt`` / ``wal_truncated`` gaps); ``delivered_lost`` the delivered
    records found that no longer verify. ``pages_skipped`` of ``pages`` could not be read."""

    cause: Literal["database", "wal"]
    moved_to: str | None
    detected: Literal["open", "running"]
    salvaged: int
    delivered_kept: int
    undelivered_lost: int
    delivered_lost: int
    pages: int
    pages_skipped: int


Report = SeqGap | Refused | Corrupt
_DECODER = msgspec.json.Decoder(Report)


def encode_report(report: Report) -> str:
    return msgspec.json.encode(report).decode()


def decode_report(text: str) -> Report:
    report: Report = _DECODER.decode(text)
    return report
