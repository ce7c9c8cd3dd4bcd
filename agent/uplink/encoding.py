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

import zlib
from typing import Final, Literal

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

__all__ = [
    "CONTENT_TYPES",
    "Encoding",
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
_MAX_INFLATED: Final = 16 * 1024 * 1024


class PayloadError(ValueError):
    """A payload that is neither JSON nor a zlib stream of at most ``max_bytes`` (permanent)."""


def encoding_of(compression: Literal["none", "zlib"]) -> Encoding:
    """The wire encoding of a ``uplink.compression`` setting."""
    return "json+zlib" if compression == "zlib" else "json"


def encode_payload(envelope: bytes, encoding: Encoding) -> bytes:
    """``envelope`` as sent under ``encoding``."""
    return zlib.compress(envelope, _LEVEL) if encoding == "json+zlib" else envelope


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
