"""Modbus links: the only code that opens sockets and serial ports for Modbus (the byte
channels themselves are :mod:`drivers.mbchannel`).

A :class:`Link` is one physical channel and its framing:

==========  ====================================  ==========================================
kind        channel                               framing, matching of replies
==========  ====================================  ==========================================
tcp         a TCP endpoint (PLC or TCP gateway)   MBAP; by transaction id, then unit id
rtu_tcp     a TCP serial device server (DTU)      RTU; by unit id (no transaction id)
rtu         a serial port                         RTU; by unit id
ascii       a serial port                         ASCII; by unit id
==========  ====================================  ==========================================

Every unit id behind a gateway, and every unit on a line, shares its link; the link's lock makes
requests strictly sequential (one request in flight per channel, which is also what serial
device servers need).

Invariants:
- a reply is accepted only for the pending request: on TCP a frame with another transaction id
  is discarded and counted (``late`` when it answers a request that timed out, else ``stray``);
  on RTU/ASCII a frame from another unit is discarded and counted (``unit_id``) and the input is
  flushed before each request, so an old reply is never read as a new one;
- a timeout fails only that request: the connection stays open (other units behind the same
  gateway keep theirs). The connection is closed only when the transport fails: reset, EOF, an
  MBAP header that cannot be framed;
- every failure is a drivers exception with a ``kind`` (see :mod:`drivers.errors`), chained.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from typing import Literal

from drivers.driverlog import RateLimit, log
from drivers.errors import BadReply, DeviceUnavailable, DriverConfigError, ProtocolError
from drivers.mbchannel import (
    Channel,
    SerialChannel,
    SerialSettings,
    TcpChannel,
    open_serial,
    os_error_kind,
)
from drivers.mbproto import (
    AsciiDecoder,
    ExceptionReply,
    Frame,
    FramingError,
    MbapDecoder,
    PduRequest,
    ReplyMismatch,
    RtuDecoder,
    ascii_frame,
    check_reply,
    mbap_frame,
    rtu_frame,
)

__all__ = [
    "EXCEPTION_NAMES",
    "Link",
    "LinkKind",
    "SerialSettings",
    "os_error_kind",
    "serial_link",
    "tcp_link",
]  # SerialSettings and os_error_kind live in drivers.mbchannel (re-exported)

LinkKind = Literal["tcp", "rtu_tcp", "rtu", "ascii"]

EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    5: "acknowledge",
    6: "device busy",
    7: "negative acknowledge",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}
_log = logging.getLogger("drivers.modbus")
_RATE = RateLimit(60.0)


class Link:
    """One channel (see the module table). Created without I/O; opened by the first request.

    ``counters`` counts, by reason, replies that were discarded or refused as not answering
    the request, and framing damage: ``late``, ``stray``, ``unit_id``, ``function_code``,
    ``write_echo``, ``byte_count``, ``length``, ``garbage`` (bytes), ``crc``, ``framing``.
    """

    def __init__(
        self,
        *,
        key: str,
        kind: LinkKind,
        host: str = "",
        port: int = 0,
        serial_settings: SerialSettings | None = None,
        owner: object = None,
    ) -> None:
        self.key, self.kind, self.owner = key, kind, owner
        self._host, self._port, self._serial = host, port, serial_settings
        self.counters: collections.Counter[str] = collections.Counter()
        self.connects = 0  # successful opens (a reconnect counter)
        self._chan: Channel | None = None
        self._decoder: MbapDecoder | RtuDecoder | AsciiDecoder = self._new_decoder()
        self._lock: asyncio.Lock | None = None
        self._users = 0
        self._tid = 0
        self._pending: tuple[int | None, int] | None = None  # (tid, unit) awaited
        self._waiter: asyncio.Future[Frame] | None = None
        self._timed_out: collections.deque[int] = collections.deque(maxlen=32)

    def _new_decoder(self) -> MbapDecoder | RtuDecoder | AsciiDecoder:
        if self.kind == "tcp":
            return MbapDecoder()
        return AsciiDecoder() if self.kind == "ascii" else RtuDecoder()

    # -- users and ownership -------------------------------------------------------------

    @property
    def in_use(self) -> bool:
        return self._users > 0

    @property
    def connected(self) -> bool:
        return self._chan is not None

    def enter(self) -> None:
        self._users += 1

    def leave(self) -> None:
        self._users = max(0, self._users - 1)
        if self._users == 0:
            self.close()
            self._lock = None

    @contextlib.asynccontextmanager
    async def owned(self) -> AsyncIterator[None]:
        """Exclusive use of the channel (one request stream per bus)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            yield

    def close(self) -> None:
        chan, self._chan = self._chan, None
        if chan is not None:
            chan.close()
        self._decoder = self._new_decoder()

    # -- opening -------------------------------------------------------------------------

    async def open(self, device: str, timeout_s: float) -> None:
        """Open the channel if it is not (raises DeviceUnavailable with its kind)."""
        if self._chan is not None:
            return
        loop = asyncio.get_running_loop()
        if self._serial is None:
            what = f"connect {self._host}:{self._port}"
            try:
                async with asyncio.timeout(timeout_s):
                    _, proto = await loop.create_connection(
                        lambda: TcpChannel(self), self._host, self._port
                    )
            except (OSError, TimeoutError) as exc:
                kind = os_error_kind(exc)
                text = f"no answer within {timeout_s:g} s" if kind == "timeout" else str(exc)
                raise DeviceUnavailable(device, f"{what}: {text}", kind=kind) from exc
            sock = proto.transport.get_extra_info("socket") if proto.transport else None
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._chan = proto
        else:
            s = self._serial
            ser = open_serial(
                device, path=s.path, baudrate=s.baudrate, bytesize=s.bytesize,
                parity=s.parity, stopbits=s.stopbits,
            )  # fmt: skip
            self._chan = SerialChannel(self, ser, loop)
        self._decoder = self._new_decoder()
        self.connects += 1

    # -- one transaction -----------------------------------------------------------------

    async def transact(
        self, req: PduRequest, unit: int, device: str, timeout_s: float
    ) -> list[int] | list[bool]:
        """Send ``req`` to ``unit`` and return the verified reply's data (call inside
        :meth:`owned`). Raises DeviceUnavailable, ProtocolError (exception reply), BadReply."""
        await self.open(device, timeout_s)
        chan = self._chan
        assert chan is not None
        tid: int | None = None
        if self.kind == "tcp":
            self._tid = self._tid % 0xFFFF + 1
            tid = self._tid
            frame = mbap_frame(tid, unit, req.pdu)
        else:
            self._decoder.clear()  # flush: nothing read before the request answers it
            frame = (ascii_frame if self.kind == "ascii" else rtu_frame)(unit, req.pdu)
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        self._pending = (tid, unit)
        crc_before = self._decoder.crc_errors
        # A plain timer on the reply's future, not asyncio.timeout(): one handle per request,
        # no cancel-and-uncancel of the polling task (this is every request of every poll).
        timer = loop.call_later(timeout_s, _expire, waiter)
        try:
            try:
                chan.write(frame)
            except OSError as exc:
                self._lost(chan, "closed", f"write failed: {exc}")
            reply = await waiter
        except DeviceUnavailable as exc:  # the channel failed under the request
            raise DeviceUnavailable(device, exc.reason, kind=exc.kind) from exc
        except TimeoutError as exc:
            if tid is not None:
                self._timed_out.append(tid)
            kind = "crc" if self._decoder.crc_errors > crc_before else "timeout"
            what = f"function {req.function} at {req.address}+{req.count}"
            raise DeviceUnavailable(
                device, f"{what}: no answer within {timeout_s:g} s", kind=kind
            ) from exc
        finally:
            timer.cancel()
            self._waiter, self._pending = None, None
        if reply.unit != unit:  # TCP: our transaction id, but another unit answered
            self.counters["unit_id"] += 1
            raise BadReply(device, "unit_id", f"unit {reply.unit} answered a request to {unit}")
        try:
            return check_reply(req, reply.pdu)
        except ExceptionReply as exc:
            name = EXCEPTION_NAMES.get(exc.code, "unknown")
            what = f"function {req.function} at {req.address}+{req.count}"
            if exc.code in (10, 11):  # the gateway cannot reach the unit: it is gone
                raise DeviceUnavailable(
                    device, f"{what}: exception {exc.code} ({name})", kind=f"exception:{exc.code}"
                ) from exc
            raise ProtocolError(
                device, f"{what}: exception response {exc.code} ({name})", exception_code=exc.code
            ) from exc
        except ReplyMismatch as exc:
            self.counters[exc.reason] += 1
            raise BadReply(device, exc.reason, exc.detail) from exc

    # -- callbacks from the channel ------------------------------------------------------

    def _received(self, data: bytes) -> None:
        """Bytes from the channel. Never raises into the event loop (an exception there would
        print asyncio's "Fatal error" traceback per frame): one rate-limited line instead."""
        try:
            self._receive(data)
        except Exception as exc:  # a bug, not the peer's fault: drop the stream, say so once
            self.counters["internal"] += 1
            if _RATE.allow(self.key) is not None:
                error = f"{type(exc).__name__}: {exc}"
                total = self.counters["internal"]
                log(_log, logging.ERROR, "modbus_receive_failed", link=self.key, error=error,
                    total=total)  # fmt: skip
            if self._chan is not None:
                self._lost(self._chan, "framing", f"cannot decode: {type(exc).__name__}")

    def _receive(self, data: bytes) -> None:
        decoder = self._decoder
        garbage, crc = decoder.garbage, decoder.crc_errors
        try:
            frames = decoder.feed(data)
        except FramingError as exc:
            self.counters["framing"] += 1
            if self._chan is not None:
                self._lost(self._chan, "framing", str(exc))
            return
        self.counters["garbage"] += decoder.garbage - garbage
        self.counters["crc"] += decoder.crc_errors - crc
        for frame in frames:
            self._deliver(frame)

    def _deliver(self, frame: Frame) -> None:
        pending, waiter = self._pending, self._waiter
        if pending is None or waiter is None or waiter.done():
            self.counters["late" if frame.tid in self._timed_out else "stray"] += 1
            return
        tid, unit = pending
        if tid is not None and frame.tid != tid:
            self.counters["late" if frame.tid in self._timed_out else "stray"] += 1
            return
        if tid is None and frame.unit != unit:
            self.counters["unit_id"] += 1
            return
        waiter.set_result(frame)

    def _lost(self, chan: object, kind: str, text: str) -> None:
        if chan is not self._chan:
            return  # an old channel's late news
        self.close()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(DeviceUnavailable(self.key, text, kind=kind))


def _expire(waiter: asyncio.Future[Frame]) -> None:
    """A request's timeout: its reply did not come (a reply that did has settled it)."""
    if not waiter.done():
        waiter.set_exception(TimeoutError())


SERIAL_LINKS: dict[str, Link] = {}  # by port path: one owner per physical line
TCP_LINKS: dict[tuple[str, int], Link] = {}  # by endpoint: one connection per gateway


def tcp_link(host: str, port: int, kind: LinkKind = "tcp") -> Link:
    """The link of a TCP endpoint (MBAP, or RTU framing through a serial device server)."""
    endpoint = (host.lower(), port)
    link = TCP_LINKS.get(endpoint)
    if link is not None and link.kind == kind:
        return link
    if link is not None and link.in_use:
        raise DriverConfigError(
            f"endpoint {host}:{port} is used with framing {link.kind!r} and {kind!r}; "
            "one endpoint speaks one framing"
        )
    prefix = "tcp" if kind == "tcp" else "rtu-tcp"
    link = TCP_LINKS[endpoint] = Link(
        key=f"{prefix}:{host.lower()}:{port}", kind=kind, host=host, port=port
    )
    return link


def serial_link(settings: SerialSettings, kind: LinkKind, *, owner: object) -> Link:
    """The link of a serial port; one physical line has one configuration."""
    link = SERIAL_LINKS.get(settings.path)
    if link is not None and link.owner == owner and link.kind == kind:
        return link
    if link is not None and link.in_use:
        raise DriverConfigError(
            f"serial port {settings.path!r} is already open with other settings "
            f"({link.owner}, {link.kind}); one physical line has one configuration"
        )
    link = SERIAL_LINKS[settings.path] = Link(
        key=f"serial:{settings.path}", kind=kind, serial_settings=settings, owner=owner
    )
    return link
