"""The two byte channels under a Modbus link: a TCP socket and a serial port (I/O only).

A channel moves bytes and reports what happens to the link that owns it (``_received``,
``_lost``); framing, matching and timeouts are the link's (:mod:`drivers.mblink`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import termios
from dataclasses import dataclass
from typing import Protocol

import serial

from drivers.errors import DeviceUnavailable

__all__ = [
    "PARITY",
    "Channel",
    "SerialChannel",
    "SerialSettings",
    "TcpChannel",
    "open_serial",
    "os_error_kind",
]

PARITY = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD}


class _Receiver(Protocol):
    """What a channel reports to (a :class:`drivers.mblink.Link`)."""

    def _received(self, data: bytes) -> None: ...
    def _lost(self, chan: object, kind: str, text: str) -> None: ...


def os_error_kind(exc: BaseException) -> str:
    """The ``kind`` of a failed open/connect/read (see :mod:`drivers.errors`)."""
    if isinstance(exc, socket.gaierror):
        return "no_route"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, FileNotFoundError):
        return "port_missing"
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "no_route"
    if isinstance(exc, OSError) and exc.errno in (errno.EBUSY, errno.EACCES, errno.EAGAIN):
        return "port_busy"
    if isinstance(exc, serial.SerialException):
        text = str(exc)
        if "No such file" in text or "[Errno 2]" in text:
            return "port_missing"
        if "exclusively lock" in text or "busy" in text.lower():
            return "port_busy"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, termios.error):  # the port refused its line settings (no OSError)
        return "port_settings"
    return "closed"


def open_serial(
    device: str, *, path: str, baudrate: int, bytesize: int, parity: str, stopbits: int
) -> serial.Serial:
    """Open a serial port non-blocking and exclusive, its input flushed; raises
    DeviceUnavailable with the failure's kind. ``termios.error`` is no OSError: a port that
    refuses its line settings (a pty or USB adapter refusing a parity) raises it on open."""
    try:
        ser = serial.Serial(
            port=path,
            baudrate=baudrate,
            bytesize=bytesize,
            parity=PARITY[parity],
            stopbits=stopbits,
            timeout=0,
            exclusive=True,
        )
    except (serial.SerialException, OSError, ValueError, termios.error) as exc:
        kind = os_error_kind(exc)
        raise DeviceUnavailable(device, f"cannot open {path}: {exc}", kind=kind) from exc
    ser.reset_input_buffer()
    return ser


@dataclass(frozen=True, slots=True)
class SerialSettings:
    path: str
    baudrate: int
    bytesize: int
    parity: str
    stopbits: int


class Channel(Protocol):
    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...


class TcpChannel(asyncio.Protocol):
    def __init__(self, link: _Receiver) -> None:
        self.link = link
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.link._received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.link._lost(self, "closed", f"connection lost: {exc or 'EOF'}")

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class SerialChannel:
    def __init__(
        self, link: _Receiver, ser: serial.Serial, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.link, self.ser, self.loop = link, ser, loop
        loop.add_reader(ser.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.ser.fileno(), 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            self.link._lost(self, "closed", f"read failed: {exc}")
            return
        if data:
            self.link._received(data)

    def write(self, data: bytes) -> None:
        os.write(self.ser.fileno(), data)

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.loop.remove_reader(self.ser.fileno())
        with contextlib.suppress(OSError, serial.SerialException):
            self.ser.close()
