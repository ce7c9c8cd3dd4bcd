"""Sans-I/O serial-line protocol: bytes in, frames and readings out (no ports, no clock).

Layers, each a pure function of the bytes fed so far:

1. :class:`Framer` cuts the byte stream into frames, by terminator (``"terminator"``) or
   between start and end markers (``"start_end"``). Invariant (property-tested): the frames
   produced do not depend on how the stream is chunked; bytes outside frames (garbage), a frame
   cut short by a new start marker, and frames longer than ``max_frame`` are dropped and counted.
2. :func:`verify_checksum` strips and checks a trailing ``<separator><hex>`` checksum
   (XOR as in NMEA 0183, sum-8, CRC-16/Modbus), computed over the frame text before the
   separator; a mismatch rejects the frame.
3. :class:`LineProtocol` parses a verified frame by a regular expression with named groups or by
   delimiter and field index, and maps it to ``(tag position, value, quality)`` readings: a
   field that is missing or not a number gives BAD_DEVICE (the device said something, but not a
   value: e.g. ``----`` while a sensor is in fault); scale, offset and range as in
   :func:`drivers.codec.to_engineering`. A frame the pattern does not match is rejected.

Number grammar (:func:`parse_number`), strict on purpose — Python's ``float()`` also takes
``6_6.6``, ``nan``, ``inf`` and surrounding whitespace, none of which a gas controller sends:
``decimal`` is ``[+-]digits[.digits][e[+-]digits]`` (or ``.digits``); ``hex`` (only when the
tag says ``number = "hex"``) is hex digits with an optional ``0x``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from drivers.codec import to_engineering
from drivers.config import Checksum, SerialLineDeviceConfig
from drivers.errors import DriverConfigError
from drivers.types import Quality

__all__ = [
    "Framer",
    "LineProtocol",
    "Reading",
    "checksum_text",
    "config_problems",
    "parse_number",
    "verify_checksum",
]


_Lookup = Callable[[str | int], str | None]  # field (group name or index) -> its text


class Framer:
    """Incremental framer; :meth:`feed` returns the frames completed by ``data``."""

    def __init__(self, *, start: bytes, end: bytes, max_frame: int) -> None:
        """``start`` empty: frames end at ``end`` (a terminator); else they lie between the two."""
        if not end or (start and start == end):
            raise DriverConfigError("a frame needs a non-empty end marker different from start")
        self._start, self._end, self._max = start, end, max_frame
        self._buf = bytearray()
        self._in_frame = not start  # terminator mode is always inside a frame
        self._skipping = False  # terminator mode: the current frame is already too long
        self.dropped = 0  # frames dropped: too long, or cut short by a new start marker
        self.garbage = 0  # bytes outside any frame (start/end mode)

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        return self._terminated() if not self._start else self._delimited()

    def _terminated(self) -> list[bytes]:
        buf, end, frames = self._buf, self._end, []
        while (i := buf.find(end)) >= 0:
            frame = bytes(buf[:i])
            del buf[: i + len(end)]
            if self._skipping or len(frame) > self._max:
                self._skipping = False
                self.dropped += 1
            elif frame:
                frames.append(frame)
        if len(buf) > self._max + len(end) - 1:  # too long already, whatever comes next
            del buf[: len(buf) - (len(end) - 1)]
            self._skipping = True
        return frames

    def _delimited(self) -> list[bytes]:
        buf, start, end = self._buf, self._start, self._end
        frames: list[bytes] = []
        while True:
            if not self._in_frame:
                i = buf.find(start)
                if i < 0:
                    keep = len(start) - 1
                    self.garbage += max(0, len(buf) - keep)
                    del buf[: max(0, len(buf) - keep)]
                    return frames
                self.garbage += i
                del buf[: i + len(start)]
                self._in_frame = True
            j, k = buf.find(end), buf.find(start)
            if k >= 0 and (j < 0 or k < j):  # a new frame starts before this one ended
                del buf[: k + len(start)]
                self.dropped += 1
                continue
            if j < 0:
                if len(buf) > self._max + len(end) - 1:  # too long: look for the next start
                    keep = max(len(start), len(end)) - 1
                    del buf[: len(buf) - keep]
                    self._in_frame = False
                    self.dropped += 1
                return frames
            frame = bytes(buf[:j])
            del buf[: j + len(end)]
            self._in_frame = False
            if len(frame) > self._max:
                self.dropped += 1
            else:
                frames.append(frame)


def _crc16_modbus(data: bytes) -> int:
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def checksum_text(kind: Checksum, payload: bytes) -> bytes:
    """The checksum of ``payload`` as upper-case hex (2 digits; 4 for CRC-16/Modbus)."""
    if kind == "xor":
        x = 0
        for byte in payload:
            x ^= byte
        return b"%02X" % x
    if kind == "sum8":
        return b"%02X" % (sum(payload) & 0xFF)
    if kind == "crc16_modbus":
        return b"%04X" % _crc16_modbus(payload)
    raise ValueError(f"no checksum for {kind!r}")


def verify_checksum(kind: Checksum, separator: bytes, frame: bytes) -> bytes | None:
    """The payload of ``frame`` if its trailing checksum is right; None if it is not."""
    if kind == "none":
        return frame
    payload, sep, given = frame.rpartition(separator)
    if not sep or given.upper() != checksum_text(kind, payload):
        return None
    return payload


@dataclass(frozen=True, slots=True)
class Reading:
    """One tag's value from one frame; ``tag`` is its position in the device's tag list."""

    tag: int
    value: float
    quality: Quality


_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_HEX = re.compile(r"(?:0[xX])?[0-9A-Fa-f]+")


def parse_number(raw: str | None, grammar: str = "decimal") -> float:
    """The number in ``raw`` under the strict grammar, or NaN when it is not one."""
    if raw is None:
        return math.nan
    if grammar == "hex":
        return float(int(raw, 16)) if _HEX.fullmatch(raw) else math.nan
    return float(raw) if _DECIMAL.fullmatch(raw) else math.nan


def _escape(text: str) -> bytes:
    return text.encode("latin-1")


class LineProtocol:
    """Framer + checksum + parser of one serial-line device (see the module docstring)."""

    def __init__(self, cfg: SerialLineDeviceConfig) -> None:
        problems = config_problems(cfg)
        if problems:
            raise DriverConfigError(f"device {cfg.name!r}: " + "; ".join(p[1] for p in problems))
        self.cfg = cfg
        if cfg.framing == "terminator":
            self.framer = Framer(start=b"", end=_escape(cfg.terminator), max_frame=cfg.max_frame)
        else:
            start, end = _escape(cfg.start), _escape(cfg.end)
            self.framer = Framer(start=start, end=end, max_frame=cfg.max_frame)
        self._sep = _escape(cfg.checksum_separator)
        self._regex = re.compile(cfg.pattern) if cfg.parse == "regex" else None
        self.request = _escape(cfg.poll_request)
        self.frames = 0  # frames accepted (checksum right, parsed)
        self.rejected = 0  # frames with a wrong checksum, not text, or not matching

    def feed(self, data: bytes) -> list[Reading]:
        """Readings of every frame completed by ``data``, in stream order."""
        out: list[Reading] = []
        for frame in self.framer.feed(data):
            readings = self.parse(frame)
            if readings is None:
                self.rejected += 1
            else:
                self.frames += 1
                out += readings
        return out

    def parse(self, frame: bytes) -> list[Reading] | None:
        """Readings of one frame; None when the frame is rejected."""
        payload = verify_checksum(self.cfg.checksum, self._sep, frame)
        if payload is None:
            return None
        try:
            text = payload.decode("ascii")
        except UnicodeDecodeError:
            return None
        fields = self._fields(text)
        if fields is None:
            return None
        key = None if self.cfg.key_field is None else fields(self.cfg.key_field)
        out = []
        for i, tag in enumerate(self.cfg.tags):
            if tag.key is not None and tag.key != key:
                continue
            number = parse_number(fields(tag.field), tag.number)
            if math.isnan(number):
                out.append(Reading(i, math.nan, Quality.BAD_DEVICE))
                continue
            value, quality = to_engineering(number, tag)
            out.append(Reading(i, value, quality))
        return out

    def _fields(self, text: str) -> _Lookup | None:
        if self._regex is not None:
            match = self._regex.fullmatch(text.strip())
            if match is None:
                return None
            groups = match.groupdict()
            return lambda f: groups.get(f) if isinstance(f, str) else None
        parts = [p.strip() for p in text.split(self.cfg.delimiter)]
        return lambda f: parts[f] if isinstance(f, int) and f < len(parts) else None


def config_problems(cfg: SerialLineDeviceConfig) -> list[tuple[str, str, str]]:
    """``(key, message, hint)`` for every problem of ``cfg`` that msgspec cannot see (no I/O)."""
    out: list[tuple[str, str, str]] = []
    if cfg.framing == "terminator" and not cfg.terminator:
        out.append(("terminator", "terminator is empty", 'e.g. terminator = "\\r\\n"'))
    if cfg.framing == "start_end" and (not cfg.start or not cfg.end or cfg.start == cfg.end):
        msg = "start_end framing needs two different, non-empty markers"
        out.append(("end", msg, 'e.g. start = "\\u0002", end = "\\u0003"'))
    for key in ("terminator", "start", "end", "checksum_separator", "poll_request"):
        if any(ord(c) > 0xFF for c in getattr(cfg, key)):
            out.append((key, f"{key} has characters above \\u00ff", "use single bytes"))
    if cfg.checksum != "none" and not cfg.checksum_separator:
        out.append(("checksum_separator", "a checksum needs a separator", 'e.g. "*"'))
    groups: set[str] = set()
    if cfg.parse == "regex":
        try:
            groups = set(re.compile(cfg.pattern).groupindex)
        except re.error as exc:
            out.append(("pattern", f"invalid regular expression: {exc}", "check the pattern"))
        if not cfg.pattern:
            out.append(("pattern", 'parse = "regex" needs a pattern', 'add pattern = "..."'))
    elif not cfg.delimiter:
        out.append(("delimiter", "delimiter is empty", 'e.g. delimiter = ","'))
    wanted = "a group name" if cfg.parse == "regex" else "a field index"
    fields = [("key_field", cfg.key_field)] if cfg.key_field is not None else []
    fields += [(f'tags[{i}] "{t.name}".field', t.field) for i, t in enumerate(cfg.tags)]
    for key, field in fields:
        if isinstance(field, str) != (cfg.parse == "regex"):
            out.append((key, f"{field!r} is not {wanted}", f'parse = "{cfg.parse}" needs {wanted}'))
        elif isinstance(field, str) and groups and field not in groups:
            out.append((key, f"the pattern has no group {field!r}", f"(?P<{field}>...)"))
    for i, t in enumerate(cfg.tags):
        if t.key is not None and cfg.key_field is None:
            out.append(
                (f'tags[{i}] "{t.name}".key', "key is set without key_field", "set key_field")
            )
    return out
