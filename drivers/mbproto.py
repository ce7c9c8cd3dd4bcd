"""Sans-I/O Modbus client protocol: request PDUs, reply verification, and the three framings.

No sockets, no clock. :mod:`drivers.mblink` moves the bytes.

Framings (client side):
- MBAP (Modbus TCP): ``tid(2) pid(2)=0 len(2) unit(1) pdu``. A header with a protocol id other
  than 0 or a length outside 2..254 cannot be framed: :class:`FramingError` (the stream is lost,
  the connection must be closed).
- RTU (serial lines, and RTU over TCP through a serial device server): ``unit pdu crc16``. There
  is no length field: the decoder knows the reply lengths of the function codes a client sends
  and resynchronises on garbage by scanning for the next frame whose CRC is right; bytes skipped
  are counted (``garbage``), candidate frames with a wrong CRC are counted (``crc_errors``).
- ASCII (serial lines): ``:`` hex(unit pdu lrc) ``CR LF``; bad hex or LRC is counted and dropped.

Reply verification (:func:`check_reply`): the function code, the byte count and the data length
must match the request exactly; a write's echo must repeat the request; an exception reply is
:class:`ExceptionReply`. Anything else is :class:`ReplyMismatch` with a short ``reason`` (a
counter key: ``function_code``, ``write_echo``, ``byte_count``, ``length``, ``unit_id``).
Unit ids and transaction ids are checked by the link, which knows which request is pending.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

from drivers.config import Table

__all__ = [
    "READ_CODES",
    "AsciiDecoder",
    "ExceptionReply",
    "Frame",
    "FramingError",
    "MbapDecoder",
    "PduRequest",
    "ReplyMismatch",
    "RtuDecoder",
    "ascii_frame",
    "check_reply",
    "crc16",
    "mbap_frame",
    "read_request",
    "rtu_frame",
    "write_coils",
    "write_registers",
]

READ_CODES: dict[Table, int] = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
_WRITE_CODES = frozenset({5, 6, 15, 16})
_MAX_RTU = 256  # the longest RTU frame
_HEX = re.compile(rb"[0-9A-Fa-f]*")


class FramingError(Exception):
    """The byte stream cannot be framed any more (TCP): the connection must be dropped."""


class ReplyMismatch(Exception):  # noqa: N818 (a signal, not a failure name)
    """A framed reply that does not answer the request; ``reason`` is a counter key."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class ExceptionReply(Exception):  # noqa: N818 (a signal, not a failure name)
    """The device answered with a Modbus exception response."""

    def __init__(self, code: int) -> None:
        super().__init__(f"exception response {code}")
        self.code = code


@dataclass(frozen=True, slots=True)
class PduRequest:
    """One request PDU and what its reply must look like."""

    pdu: bytes
    function: int
    address: int
    count: int  # registers or bits read / written

    @property
    def is_write(self) -> bool:
        return self.function in _WRITE_CODES


@dataclass(frozen=True, slots=True)
class Frame:
    """One framed reply: ``tid`` is None on RTU and ASCII."""

    tid: int | None
    unit: int
    pdu: bytes


def read_request(table: Table, address: int, count: int) -> PduRequest:
    fc = READ_CODES[table]
    return PduRequest(struct.pack(">BHH", fc, address, count), fc, address, count)


def write_coils(address: int, values: list[bool]) -> PduRequest:
    """FC05 for one coil, FC15 for several."""
    if len(values) == 1:
        pdu = struct.pack(">BHH", 5, address, 0xFF00 if values[0] else 0)
        return PduRequest(pdu, 5, address, 1)
    packed = bytearray((len(values) + 7) // 8)
    for i, v in enumerate(values):
        if v:
            packed[i // 8] |= 1 << (i % 8)
    pdu = struct.pack(">BHHB", 15, address, len(values), len(packed)) + bytes(packed)
    return PduRequest(pdu, 15, address, len(values))


def write_registers(address: int, values: list[int]) -> PduRequest:
    """FC06 for one register, FC16 for several (values 0..65535)."""
    if len(values) == 1:
        return PduRequest(struct.pack(">BHH", 6, address, values[0]), 6, address, 1)
    body = struct.pack(f">{len(values)}H", *values)
    pdu = struct.pack(">BHHB", 16, address, len(values), len(body)) + body
    return PduRequest(pdu, 16, address, len(values))


def check_reply(req: PduRequest, pdu: bytes) -> list[int] | list[bool]:
    """The data of a verified reply (registers or bits, exactly ``req.count``; ``[]`` for a
    write). Raises :class:`ExceptionReply` or :class:`ReplyMismatch`."""
    if not pdu:
        raise ReplyMismatch("length", "empty reply")
    fc = pdu[0]
    if fc == req.function | 0x80:
        if len(pdu) != 2:
            raise ReplyMismatch("length", f"exception reply of {len(pdu)} bytes")
        raise ExceptionReply(pdu[1])
    if fc != req.function:
        reason = "write_echo" if fc in _WRITE_CODES and not req.is_write else "function_code"
        raise ReplyMismatch(reason, f"function {fc} in reply to function {req.function}")
    if req.is_write:
        if pdu[:5] != req.pdu[:5] or len(pdu) != 5:
            raise ReplyMismatch("write_echo", "the echo does not repeat the write")
        return []
    bits = fc in (1, 2)
    want = (req.count + 7) // 8 if bits else 2 * req.count
    if len(pdu) < 2 or pdu[1] != want:
        got = pdu[1] if len(pdu) > 1 else -1
        raise ReplyMismatch("byte_count", f"byte count {got}, expected {want}")
    if len(pdu) != 2 + want:
        raise ReplyMismatch("length", f"{len(pdu) - 2} data bytes, byte count says {want}")
    data = pdu[2:]
    if bits:
        return [bool(data[i // 8] >> (i % 8) & 1) for i in range(req.count)]
    return list(struct.unpack(f">{req.count}H", data))


# -- framings ---------------------------------------------------------------------------------


def crc16(data: bytes) -> int:
    """Modbus CRC-16 (poly 0xA001 reflected, init 0xFFFF); sent low byte first."""
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def mbap_frame(tid: int, unit: int, pdu: bytes) -> bytes:
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


def rtu_frame(unit: int, pdu: bytes) -> bytes:
    body = bytes([unit]) + pdu
    return body + struct.pack("<H", crc16(body))


def _lrc(data: bytes) -> int:
    return (-sum(data)) & 0xFF


def ascii_frame(unit: int, pdu: bytes) -> bytes:
    body = bytes([unit]) + pdu
    return b":" + (body + bytes([_lrc(body)])).hex().upper().encode() + b"\r\n"


@dataclass(slots=True)
class MbapDecoder:
    """Frames from a Modbus TCP byte stream (raises :class:`FramingError` on a bad header)."""

    _buf: bytearray = field(default_factory=bytearray)
    garbage: int = 0
    crc_errors: int = 0

    def clear(self) -> None:
        self._buf.clear()

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        out: list[Frame] = []
        while len(self._buf) >= 7:
            tid, pid, length, unit = struct.unpack_from(">HHHB", self._buf)
            if pid != 0 or not 2 <= length <= 254:
                self._buf.clear()
                raise FramingError(f"MBAP header with protocol {pid}, length {length}")
            if len(self._buf) < 6 + length:
                break
            out.append(Frame(tid, unit, bytes(self._buf[7 : 6 + length])))
            del self._buf[: 6 + length]
        return out


def _rtu_length(buf: bytearray, i: int) -> int:
    """Length of the reply frame starting at ``buf[i]`` (0: not a reply header; -1: need more
    bytes to know)."""
    if len(buf) - i < 2:
        return -1
    unit, fc = buf[i], buf[i + 1]
    if not 1 <= unit <= 247:
        return 0
    if fc in (1, 2, 3, 4):
        if len(buf) - i < 3:
            return -1
        return 5 + buf[i + 2]
    if fc in _WRITE_CODES:
        return 8
    if fc & 0x80 and fc & 0x7F in (1, 2, 3, 4, 5, 6, 15, 16):
        return 5
    return 0


@dataclass(slots=True)
class RtuDecoder:
    """Frames from an RTU byte stream; garbage is skipped (and counted), never raises."""

    _buf: bytearray = field(default_factory=bytearray)
    garbage: int = 0
    crc_errors: int = 0

    def clear(self) -> None:
        self.garbage += len(self._buf)
        self._buf.clear()

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        out: list[Frame] = []
        i = 0
        pending = -1  # the first offset whose frame may still complete
        while i < len(self._buf):
            n = _rtu_length(self._buf, i)
            if n == -1 or (n > 0 and len(self._buf) - i < n):
                pending = i if pending < 0 else pending
                i += 1
                continue
            if n > 0:
                body = bytes(self._buf[i : i + n - 2])
                if struct.unpack_from("<H", self._buf, i + n - 2)[0] == crc16(body):
                    self.garbage += i
                    out.append(Frame(None, body[0], body[1:]))
                    del self._buf[: i + n]
                    i, pending = 0, -1
                    continue
                if pending < 0:
                    self.crc_errors += 1
            i += 1
        keep = pending if pending >= 0 else len(self._buf)
        keep = max(keep, len(self._buf) - _MAX_RTU)
        self.garbage += keep
        del self._buf[:keep]
        return out


@dataclass(slots=True)
class AsciiDecoder:
    """Frames from a Modbus ASCII stream; bad frames are counted and dropped."""

    _buf: bytearray = field(default_factory=bytearray)
    garbage: int = 0
    crc_errors: int = 0

    def clear(self) -> None:
        self.garbage += len(self._buf)
        self._buf.clear()

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        out: list[Frame] = []
        while True:
            start = self._buf.find(b":")
            if start < 0:
                self.garbage += len(self._buf)
                self._buf.clear()
                return out
            self.garbage += start
            del self._buf[:start]
            end = self._buf.find(b"\r\n")
            if end < 0:
                if len(self._buf) > 2 * _MAX_RTU + 3:
                    self.garbage += len(self._buf)
                    self._buf.clear()
                return out
            text = bytes(self._buf[1:end])
            del self._buf[: end + 2]
            if len(text) % 2 or not _HEX.fullmatch(text):  # fromhex would accept spaces
                self.garbage += len(text) + 3
                continue
            raw = bytes.fromhex(text.decode("ascii"))
            if len(raw) < 3 or _lrc(raw[:-1]) != raw[-1]:
                self.crc_errors += 1
                continue
            out.append(Frame(None, raw[0], raw[1:-1]))
