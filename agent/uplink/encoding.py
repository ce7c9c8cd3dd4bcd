"""Payload encoding of the enveloped streams: plain JSON or the zlib stream of it.

design/UPLINK.md "Compression": when ``uplink.compression = "zlib"`` the MQTT payload of every
telemetry, alarm and event message is the zlib stream (RFC 1950) of its JSON envelope; the
retained ``state`` says ``"encoding": "json+zlib"`` and, on MQTT 5, the content-type property is
``application/json+zlib``. ``state``, ``meta`` and ``cmd/result`` are never compressed. A reader
tells them apart by the first byte: ``{`` is JSON, ``0x78`` (the zlib header's CMF for a 32 KiB
deflate window) is zlib. :func:`decode_payload` is that reader, bounded: a payload that
inflates beyond ``max_bytes`` is refused (a zlib bomb costs nothing but the refusal).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

__all__ = [
    "CONTENT_TYPES",
    "SPLICE_MIN_BYTES",
    "DeflatedBody",
    "Encoding",
    "EnvelopeParts",
    "PayloadError",
    "decode_payload",
    "encode_payload",
    "encoding_of",
    "publish_properties",
]

Encoding = Literal["json", "json+zlib"]
CONTENT_TYPES: Final[dict[str, str]] = {
    "json": "application/json",
    "json+zlib": "application/json+zlib",
}
# Level 1: ~3x faster than zlib's default 6 on a 16 KiB telemetry body (160 vs 450 us) for
# ~15 % more bytes (4.7 vs 4.1 B per reading, benchmarks/bench_uplink.py): the CPU of a
# gateway draining a backlog matters more than the last bytes.
_LEVEL: Final = 1
# Bodies the buffer stored deflated (at buffer.crypto.PACK_LEVEL) go out spliced: no
# compression on the uplink at all. Below this size the envelope's own fields weigh more than
# the body, and compressing them together saves more bytes than the splice saves CPU.
SPLICE_MIN_BYTES: Final = 2048
_ZLIB_HEADER: Final = b"\x78\x9c"  # CMF 0x78 (deflate, 32 KiB window), FLEVEL "default"
_ADLER_BASE: Final = 65521
_MAX_INFLATED: Final = 16 * 1024 * 1024


class PayloadError(ValueError):
    """A payload that is neither JSON nor a zlib stream of at most ``max_bytes`` (permanent)."""


def encoding_of(compression: Literal["none", "zlib"]) -> Encoding:
    """The wire encoding of a ``uplink.compression`` setting."""
    return "json+zlib" if compression == "zlib" else "json"


class DeflatedBody(Protocol):
    """A body held as raw deflate that can be spliced into a zlib stream unchanged
    (:class:`buffer.record.Deflated` is one): ``data`` starts and ends on a byte boundary,
    ends with a sync flush, holds no final block and refers to nothing before its start."""

    @property
    def data(self) -> bytes: ...

    @property
    def adler32(self) -> int: ...

    @property
    def size(self) -> int: ...

    def inflate(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class EnvelopeParts:
    """A JSON envelope as ``head + body + tail`` with its body still deflated (as the buffer
    stored it). Under ``json+zlib`` a body of at least :data:`SPLICE_MIN_BYTES` is spliced
    into the zlib stream as it is: neither inflated nor compressed again."""

    head: bytes
    body: DeflatedBody
    tail: bytes
    plain: bytes | None = None  # the body inflated, when the reader has it at hand

    def joined(self) -> bytes:
        """The plain JSON envelope (inflates the body unless ``plain`` is given)."""
        body = self.plain if self.plain is not None else self.body.inflate()
        return b"".join((self.head, body, self.tail))


def encode_payload(envelope: bytes | EnvelopeParts, encoding: Encoding) -> bytes:
    """``envelope`` as sent under ``encoding``: the same JSON bytes, plain or as one zlib
    stream (a spliced one decompresses to exactly the joined envelope)."""
    if isinstance(envelope, EnvelopeParts):
        if encoding != "json+zlib":
            return envelope.joined()
        if (
            envelope.body.size >= SPLICE_MIN_BYTES
            and max(len(envelope.head), len(envelope.tail)) <= 0xFFFF
        ):
            return _splice(envelope)
        envelope = envelope.joined()
    return zlib.compress(envelope, _LEVEL) if encoding == "json+zlib" else envelope


def _stored(data: bytes, *, final: bool) -> bytes:
    """One deflate stored block (RFC 1951 3.2.4), starting on a byte boundary."""
    n = len(data)
    return struct.pack("<BHH", int(final), n, n ^ 0xFFFF) + data


def _splice(parts: EnvelopeParts) -> bytes:
    """zlib header, the head as a stored block, the body's deflate data, the tail as the final
    stored block, and the Adler-32 of the whole envelope (combined, the body is not read).
    The head is a few hundred bytes at most: storing it costs less than a compressor."""
    body = parts.body
    check = zlib.adler32(parts.tail, _adler32_combine(zlib.adler32(parts.head), body.adler32,
                                                      body.size))  # fmt: skip
    return b"".join(
        (
            _ZLIB_HEADER,
            _stored(parts.head, final=False),
            body.data,
            _stored(parts.tail, final=True),
            struct.pack(">I", check),
        )
    )


def _adler32_combine(adler1: int, adler2: int, len2: int) -> int:
    """The Adler-32 of ``a + b`` from ``adler32(a)``, ``adler32(b)`` and ``len(b)`` (zlib's
    ``adler32_combine``, which Python's zlib module does not expose)."""
    rem = len2 % _ADLER_BASE
    sum1 = adler1 & 0xFFFF
    sum2 = (rem * sum1) % _ADLER_BASE
    sum1 += (adler2 & 0xFFFF) + _ADLER_BASE - 1
    sum2 += ((adler1 >> 16) & 0xFFFF) + ((adler2 >> 16) & 0xFFFF) + _ADLER_BASE - rem
    sum1 %= _ADLER_BASE
    sum2 %= _ADLER_BASE
    return sum1 | (sum2 << 16)


def decode_payload(data: bytes, *, max_bytes: int = _MAX_INFLATED) -> bytes:
    """The JSON bytes of a received payload, whichever encoding it was sent in."""
    if not data or data[0] != 0x78:
        return data  # JSON (or garbage the JSON decoder will name)
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, max_bytes)
    except zlib.error as exc:
        raise PayloadError(f"payload starts like zlib (0x78) but does not inflate: {exc}") from exc
    if d.unconsumed_tail:
        raise PayloadError(f"payload inflates beyond {max_bytes} bytes")
    if not d.eof:
        raise PayloadError("zlib payload is truncated")
    if d.unused_data:
        raise PayloadError("bytes after the end of the zlib stream")
    return out


class _PackedOnce(Properties):
    """PUBLISH properties that never change: paho packs them on every publish (~0.1 ms of
    Python each); this packs them once."""

    def pack(self) -> bytes:
        packed: bytes | None = self.__dict__.get("_packed")
        if packed is None:
            packed = super().pack()  # type: ignore[no-untyped-call]
            object.__setattr__(self, "_packed", packed)  # Properties refuses other names
        return packed


def publish_properties(encoding: Encoding) -> Properties:
    """MQTT 5 PUBLISH properties carrying the content type of ``encoding``; do not modify."""
    props = _PackedOnce(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ContentType = CONTENT_TYPES[encoding]
    return props
