"""Encrypted SQLite store-and-forward buffer (a leaf: imports no other SafeEdge package).

Public API: :class:`Store` (open, append, lease, release, release_all, settle, resend, stats,
maintain, take_evictions, rotate_key, close), :func:`record_id`, the read-only
:class:`StoreReader` (:class:`StoredRecord`, :class:`VerifyReport`), the plain data they hand
out (:class:`Record`, :class:`Stream`, :class:`StoreStats`, :class:`StreamStats`,
:class:`Eviction`, :class:`StreamLimit`) and the exception tree drawn in :mod:`buffer.errors`.
"""

from buffer.errors import (
    BufferClosedError,
    BufferCorruptError,
    BufferError,
    BufferFullError,
    BufferInUseError,
    BufferIOError,
    BufferKeyError,
    BufferMismatchError,
    BufferNeedsHumanError,
    BufferPermanentError,
    BufferTransientError,
)
from buffer.reader import StoredRecord, StoreReader, VerifyReport
from buffer.record import Record, Stream
from buffer.stats import Eviction, StoreStats, StreamLimit, StreamStats
from buffer.store import Store, record_id

__all__ = [
    "BufferClosedError",
    "BufferCorruptError",
    "BufferError",
    "BufferFullError",
    "BufferIOError",
    "BufferInUseError",
    "BufferKeyError",
    "BufferMismatchError",
    "BufferNeedsHumanError",
    "BufferPermanentError",
    "BufferTransientError",
    "Eviction",
    "Record",
    "Store",
    "StoreReader",
    "StoreStats",
    "StoredRecord",
    "Stream",
    "StreamLimit",
    "StreamStats",
    "VerifyReport",
    "record_id",
]
