"""paho's socket on an asyncio loop: readiness callbacks instead of paho's own thread.

:class:`LoopSocket` installs paho's four socket callbacks on a client. When paho opens a socket
it is registered with the loop (``add_reader``; ``add_writer`` only while paho has bytes queued),
and a keepalive task calls ``loop_misc`` at paho's next keepalive deadline. When paho closes the
socket (EOF, error, keepalive timeout, DISCONNECT written) everything is unregistered and
:attr:`LoopSocket.closed` is set. paho makes socket callbacks on the thread that runs
``connect`` (an executor during the TCP and TLS handshake): those are handed to the loop in
order, so the socket is registered before the awaited connect returns.

Reads that bring incoming PUBLISH packets (counted by the owner in :attr:`LoopSocket.incoming`)
take at most :data:`READ_SHARE` of the loop's wall time on average (bursts of
:data:`READ_BURST_S`): beyond it the descriptor is unregistered for the time that restores the
share, so a flood on the broker side (paho parses every packet on this thread) cannot starve
the poll tasks; TCP flow control holds the rest back at the broker. Keepalive is unaffected
(a pause is far shorter than a keepalive). One read callback parses packets for at most
:data:`READ_SLICE_S` (paho's ``loop_read`` would take as many as there are messages in flight).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

__all__ = ["LoopSocket"]

log = logging.getLogger("agent.uplink")  # the name log filters used before the split

_MISC_MIN_S: Final = 0.05  # never spin on paho's keepalive deadline
READ_SHARE: Final = 0.15  # at most this fraction of wall time in paho's reads, on average
READ_BURST_S: Final = 0.01  # ... with bursts of at most this long
READ_SLICE_S: Final = 0.003  # one read callback parses packets for at most about this long


class LoopSocket:
    """Drives ``client``'s socket from the running loop. Create it on the loop thread."""

    def __init__(self, client: mqtt.Client, *, accept: Callable[[], bool]) -> None:
        """``accept()`` says whether a socket opened now is still wanted (False after stop)."""
        self._client = client
        self._accept = accept
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._sock: Any = None
        self._fd: int | None = None
        self._misc: asyncio.Task[None] | None = None
        self.incoming = 0  # PUBLISH packets received (the owner counts them in on_message)
        self._read_debt = 0.0  # seconds spent reading beyond the allowed share
        self._read_at = time.perf_counter()
        self._paused: asyncio.TimerHandle | None = None
        self._throttled = True  # the read share applies (until unthrottle())
        self.closed = asyncio.Event()  # no socket registered (set until the first one opens)
        self.closed.set()
        client.on_socket_open = self._on_open
        client.on_socket_close = self._on_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write

    @property
    def open(self) -> bool:
        return self._fd is not None

    def close(self) -> None:
        """Unregister whatever is registered (paho's socket itself is paho's to close)."""
        self._unregister()

    def unthrottle(self) -> None:
        """Read at full speed from now on (the owner is stopping: nothing is polled any more,
        and the PUBACK of the offline state waits behind whatever a flood queued)."""
        self._throttled = False
        if self._paused is not None:
            self._paused.cancel()
            self._paused = None
            if self._fd is not None:
                self._resume(self._fd)

    # -- thread hand-over ------------------------------------------------------------------

    def _on_loop(self, fn: Callable[..., None], *args: Any) -> None:
        if threading.get_ident() == self._thread:
            fn(*args)
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(fn, *args)

    def _on_open(self, client: mqtt.Client, userdata: object, sock: Any) -> None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            log.debug("uplink_nodelay_failed error=%s", exc)
        self._on_loop(self._register, sock)

    def _on_close(self, client: mqtt.Client, userdata: object, sock: Any) -> None:
        self._on_loop(self._unregister)

    def _on_register_write(self, client: mqtt.Client, userdata: object, sock: Any) -> None:
        self._on_loop(self._want_write, True)

    def _on_unregister_write(self, client: mqtt.Client, userdata: object, sock: Any) -> None:
        self._on_loop(self._want_write, False)

    # -- loop thread -----------------------------------------------------------------------

    def _register(self, sock: Any) -> None:
        if not self._accept():  # a connect that outlived stop()
            sock.close()
            return
        self._sock = sock
        self._fd = sock.fileno()
        self.closed.clear()
        self._loop.add_reader(self._fd, self._readable)
        self._misc = self._loop.create_task(self._misc_loop(), name="uplink keepalive")

    def _unregister(self) -> None:
        if self._paused is not None:
            self._paused.cancel()
            self._paused = None
        if self._fd is not None:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
        self._fd = None
        self._sock = None
        if self._misc is not None and self._misc is not asyncio.current_task():
            self._misc.cancel()
        self._misc = None
        self.closed.set()

    def _want_write(self, on: bool) -> None:
        if self._fd is None:
            return
        if on:
            self._loop.add_writer(self._fd, self._client.loop_write)
        else:
            self._loop.remove_writer(self._fd)

    def _read(self) -> None:
        """paho's ``loop_read``, but ending after :data:`READ_SLICE_S`. paho's own reads as many
        packets as there are messages in flight (it ignores ``max_packets``): hundreds under a
        flood with results unacknowledged, 15-90 ms in one call on this loop. Reading one packet
        at a time and stopping at the slice leaves the rest in the socket (the descriptor stays
        readable: the next loop iteration reads on)."""
        c = self._client
        packet_read = getattr(c, "_packet_read", None)  # private in paho 2.2
        rc_handle = getattr(c, "_loop_rc_handle", None)
        if packet_read is None or rc_handle is None:  # another paho: its own loop_read
            c.loop_read()
            return
        end = time.perf_counter() + READ_SLICE_S
        while c.socket() is not None:
            rc = packet_read()
            if rc > 0:
                rc_handle(rc)
                return
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN or time.perf_counter() >= end:
                return

    def _readable(self) -> None:
        t0 = time.perf_counter()
        before = self.incoming
        self._read()
        now = time.perf_counter()
        # Reading is bounded to a share of the loop's time: a flood of incoming packets (every
        # one parsed by paho on this thread) must not starve the poll tasks. Over budget, the
        # socket is left unread for a moment; TCP holds the rest back at the broker. Reads that
        # brought no incoming PUBLISH (PUBACKs of our own publishes) are not charged: a drain
        # after an outage keeps its full speed.
        self._read_debt = max(0.0, self._read_debt - (t0 - self._read_at) * READ_SHARE)
        if self.incoming != before:
            self._read_debt += now - t0
        self._read_at = now
        if self._throttled and self._read_debt > READ_BURST_S and self._fd is not None:
            pause = (self._read_debt - READ_BURST_S) / READ_SHARE
            self._loop.remove_reader(self._fd)
            self._paused = self._loop.call_later(pause, self._resume, self._fd)
            return
        # TLS may hold decrypted bytes the descriptor no longer signals: read them too.
        pending = getattr(self._sock, "pending", None)
        if self._fd is not None and pending is not None and pending() > 0:
            self._loop.call_soon(self._readable)

    def _resume(self, fd: int) -> None:
        self._paused = None
        if self._fd == fd:
            self._loop.add_reader(fd, self._readable)
            self._readable()  # TLS may hold bytes already read from the socket

    async def _misc_loop(self) -> None:
        """paho's keepalive: PINGREQ when due, drop the connection when PINGRESP is late."""
        while self._client.loop_misc() == MQTTErrorCode.MQTT_ERR_SUCCESS:  # noqa: ASYNC110
            await asyncio.sleep(self._misc_delay())

    def _misc_delay(self) -> float:
        # paho's own deadlines (private attributes of paho 2.2, its clock is time.monotonic):
        # sleeping until the earliest costs a few wakeups per keepalive instead of one a second.
        c = self._client
        k = float(c.keepalive)
        try:
            last = min(c._last_msg_out, c._last_bytes_received)
            ping = c._ping_t
        except AttributeError:  # another paho: fall back to its own loop's one-second tick
            return 1.0
        due = last + k
        if ping > 0:
            due = min(due, ping + k)
        return min(k, max(_MISC_MIN_S, due - time.monotonic() + 0.01))
