"""Telemetry body v1 from a poll's columns (re-exported by :mod:`agent.codec`).

The encoder is a function of columns (tag index, ts, value, quality arrays) so another body
version can be another encoder with the same ``rows`` interface; the wire bytes of v1 are
exactly those :func:`agent.codec.telemetry_body` writes for the same points.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import msgspec
import numpy as np
from numpy.typing import NDArray

__all__ = ["TelemetryEncoder", "telemetry_body_from_rows"]

# The same settings as agent.codec's encoder (defaults): the bytes must match it.
_encoder: Final = msgspec.json.Encoder()


def telemetry_body_from_rows(rows: Sequence[bytes]) -> bytes:
    """A telemetry body from already-encoded point rows (``[tag, ts, value(, quality)]``).

    Byte-identical to :func:`telemetry_body` of the same points: msgspec writes no spaces, so
    the body is the rows joined by commas inside ``{"points":[...]}``.
    """
    return b'{"points":[' + b",".join(rows) + b"]}"


class TelemetryEncoder:
    """Body v1 point rows straight from a poll's columns, without a Python tuple per point.

    ``names[i]`` is the name of tag index ``i``; ``qualities`` maps each non-good quality code
    (1..255) to its wire name; code 0 is good and written without a quality. Invariant: for any
    columns, ``telemetry_body_from_rows(enc.rows(...))`` equals :func:`telemetry_body` of the
    equivalent points, byte for byte (tests/agent/test_codec_columns.py). Whole columns go
    through msgspec in one call each and are split at the commas (numbers never contain one);
    per-tag and per-quality byte pieces are precomputed and gathered with numpy indexing.
    """

    def __init__(self, names: Sequence[str], qualities: Mapping[int, str]) -> None:
        self._prefix: NDArray[np.object_] = np.empty(len(names), dtype=object)
        for i, name in enumerate(names):
            self._prefix[i] = b"[" + _encoder.encode(name) + b","
        self._suffix: NDArray[np.object_] = np.empty(256, dtype=object)
        self._known = np.zeros(256, dtype=bool)
        self._suffix[0] = b"]"
        self._known[0] = True
        for code, wire in qualities.items():
            if not 0 < code < 256:
                raise ValueError(f"quality code {code} is outside 1..255")
            self._suffix[code] = b"," + _encoder.encode(wire) + b"]"
            self._known[code] = True

    def rows(
        self,
        tag: NDArray[np.int32],
        ts_ms: NDArray[np.int64],
        value: NDArray[np.float64],
        quality: NDArray[np.uint8],
        *,
        exact: Mapping[int, int] | None = None,
    ) -> list[bytes]:
        """One encoded row per sample, in order; raises ValueError for an unknown code.
        ``exact`` maps a row position to the exact integer written instead of its float64
        value (an int64/uint64 past 2**53; :func:`telemetry_body` writes ints the same way)."""
        n = len(tag)
        if n == 0:
            return []
        if not self._known[quality].all():
            bad = sorted({int(q) for q in quality[~self._known[quality]]})
            raise ValueError(f"telemetry: unknown quality code(s) {bad}")
        if n and (int(tag.min()) < 0 or int(tag.max()) >= len(self._prefix)):
            raise ValueError(f"telemetry: tag index outside 0..{len(self._prefix) - 1}")
        # msgspec writes NaN and ±inf as null, exactly what _finite() makes of them.
        ts_parts = np.array(_encoder.encode(ts_ms.tolist())[1:-1].split(b","), dtype=object)
        val_parts = np.array(_encoder.encode(value.tolist())[1:-1].split(b","), dtype=object)
        for k, integer in (exact or {}).items():
            val_parts[k] = _encoder.encode(integer)
        out = self._prefix[tag] + ts_parts + b"," + val_parts + self._suffix[quality]
        rows: list[bytes] = out.tolist()
        return rows
