"""Records as the buffer stores them: it never interprets payloads."""

from __future__ import annotations

import enum
import zlib
from dataclasses import dataclass
from typing import Any, cast

from buffer.errors import RecordAuthError

__all__ = ["Deflated", "Record", "Stream"]


class Stream(enum.IntEnum):
    """Streams in priority order (lower value leased first).

    ``INCIDENT`` holds the incident recorder's windows (agent/review/recorder.py): a local
    record for review, not part of the uplink contract, so :meth:`Store.lease` never hands it
    out. Like alarms and events, undelivered incident records are never evicted.
    """

    ALARM = 0
    EVENT = 1
    TELEMETRY = 2
    INCIDENT = 3

    @property
    def wire_name(self) -> str:
        return self.name.lower()

    @property
    def forwarded(self) -> bool:
        """Whether the uplink carries this stream (``incident`` stays local)."""
        return self is not Stream.INCIDENT


@dataclass(frozen=True, slots=True)
class Deflated:
    """A payload as the buffer keeps it compressed, handed out without inflating it.

    ``data`` is raw deflate (RFC 1951) that starts and ends on a byte boundary, ends with a
    sync flush (``00 00 ff ff``) and holds no final block, and refers to nothing before its
    own start: spliced unchanged between other deflate blocks it inflates to the payload. A
    zlib writer doing that needs the payload's ``adler32`` and ``size`` for its trailer.
    """

    data: bytes
    adler32: int
    size: int

    def inflate(self) -> bytes:
        """The payload; raises :class:`RecordAuthError` if ``data`` does not inflate to it."""
        try:
            out = zlib.decompressobj(-zlib.MAX_WBITS).decompress(self.data)
        except zlib.error as exc:
            raise RecordAuthError(f"undecodable deflate body: {exc}") from exc
        if len(out) != self.size:
            raise RecordAuthError(f"deflate body inflates to {len(out)} bytes, not {self.size}")
        return out

    def peek(self, n: int) -> bytes:
        """The payload's first ``n`` bytes (at most), inflating no more than needed."""
        try:
            return zlib.decompressobj(-zlib.MAX_WBITS).decompress(self.data, n)
        except zlib.error as exc:
            raise RecordAuthError(f"undecodable deflate body: {exc}") from exc


class Record:
    """A stored record. ``seq`` is per stream, starts at 1, never reused. Immutable.

    ``payload`` is the bytes that were appended. ``deflated`` is the same payload in the
    compressed form the buffer stored it in (:class:`Deflated`), or None when it was stored
    raw or in an older layout: a reader that can use it as it is (the uplink splices it into
    its zlib stream) never pays for inflating it, because a record built from it inflates
    ``payload`` only on first access. ``size`` is the payload's length either way.
    """

    __slots__ = ("_payload", "created_ms", "deflated", "seq", "stream")

    stream: Stream
    seq: int
    created_ms: int
    deflated: Deflated | None
    _payload: bytes | None

    def __init__(
        self,
        stream: Stream,
        seq: int,
        created_ms: int,
        payload: bytes | None = None,
        *,
        deflated: Deflated | None = None,
    ) -> None:
        if payload is None and deflated is None:
            raise ValueError("a record needs its payload or its deflated form")
        for name, value in (
            ("stream", stream),
            ("seq", seq),
            ("created_ms", created_ms),
            ("_payload", payload),
            ("deflated", deflated),
        ):
            object.__setattr__(self, name, value)

    @property
    def payload(self) -> bytes:
        p = self._payload
        if p is None:  # then deflated is set (the constructor's rule)
            p = cast(Deflated, self.deflated).inflate()
            object.__setattr__(self, "_payload", p)
        return p

    @property
    def payload_at_hand(self) -> bool:
        """Whether :attr:`payload` is held already (reading it inflates nothing)."""
        return self._payload is not None

    @property
    def size(self) -> int:
        """``len(payload)``, without inflating it."""
        p = self._payload
        return cast(Deflated, self.deflated).size if p is None else len(p)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Record is immutable (cannot set {name})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Record is immutable (cannot delete {name})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record):
            return NotImplemented
        return (self.stream, self.seq, self.created_ms, self.payload) == (
            other.stream,
            other.seq,
            other.created_ms,
            other.payload,
        )

    def __hash__(self) -> int:
        return hash((self.stream, self.seq, self.created_ms))

    def __repr__(self) -> str:
        return (
            f"Record(stream={self.stream!r}, seq={self.seq}, created_ms={self.created_ms}, "
            f"size={self.size})"
        )
