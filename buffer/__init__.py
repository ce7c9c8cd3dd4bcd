"""Encrypted SQLite store-and-forward buffer (a leaf: imports no other SafeEdge package).

Public API: :class:`Store` (open, append, append_batch (:class:`Appended`), lease, release,
release_all, settle, resend, stats, maintain, take_evictions, pending_reports, flush_reports,
check_integrity, recover, rotate_key, close, open_report), :func:`record_id`, the read-only
:class:`StoreReader` (:class:`StoredRecord`, :class:`VerifyReport`, and :func:`salvage_file`
for a damaged file), the plain data they hand out (:class:`Record`, :class:`Stream`,
:class:`StoreStats`, :class:`StreamStats`, :class:`Eviction`, :class:`StreamLimit`,
:class:`OpenReport`, the reports :class:`SeqGap`, :class:`Refused`, :class:`Corrupt`) and the
exception tree drawn in :mod:`buffer.errors` (base :class:`StoreError`).
"""

from buffer.errors import (
    BufferClosedError,
    BufferCorruptError,
    BufferFullError,
    BufferInUseError,
    BufferIOError,
    BufferKeyError,
    BufferMismatchError,
    BufferNeedsHumanError,
    BufferPermanentError,
    BufferPermissionError,
    BufferTransientError,
    StoreError,
)
from buffer.reader import SalvageReport, StoredRecord, StoreReader, VerifyReport, salvage_file
from buffer.record import Record, Stream
from buffer.recovery import OpenReport
from buffer.reports import Corrupt, Refused, Report, SeqGap
from buffer.stats import Eviction, StoreStats, StreamLimit, StreamStats
from buffer.store import Appended, Store, WalSync, record_id

__all__ = [
    "Appended",
    "BufferClosedError",
    "BufferCorruptError",
    "BufferFullError",
    "BufferIOError",
    "BufferInUseError",
    "BufferKeyError",
    "BufferMismatchError",
    "BufferNeedsHumanError",
    "BufferPermanentError",
    "BufferPermissionError",
    "BufferTransientError",
    "Corrupt",
    "Eviction",
    "OpenReport",
    "Record",
    "Refused",
    "Report",
    "SalvageReport",
    "SeqGap",
    "Store",
    "StoreError",
    "StoreReader",
    "StoreStats",
    "StoredRecord",
    "Stream",
    "StreamLimit",
    "StreamStats",
    "VerifyReport",
    "WalSync",
    "record_id",
    "salvage_file",
]
