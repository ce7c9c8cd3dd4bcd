"""A small SNTP server (RFC 4330 answers over real UDP) whose clock runs ``offset_s`` from ours.

No NTP daemon can be started in a test without root-wide side effects (it would also try to
set this machine's clock), so this peer speaks the protocol itself: it takes the client's
request and answers with receive and transmit times of its own, shifted clock."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator

_NTP_EPOCH = 2_208_988_800


def _stamp(t: float) -> bytes:
    seconds = int(t) + _NTP_EPOCH
    return struct.pack("!II", seconds, int((t % 1.0) * 2**32))


@contextlib.contextmanager
def sntp_server(offset_s: float = 0.0) -> Iterator[int]:
    """Yields the UDP port on 127.0.0.1."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, addr = sock.recvfrom(512)
            except TimeoutError:
                continue
            received = time.time() + offset_s
            reply = bytearray(48)
            reply[0] = (0 << 6) | (4 << 3) | 4  # leap 0, version 4, mode 4 (server)
            reply[1] = 2  # stratum
            reply[24:32] = data[40:48]  # originate = the client's transmit
            reply[32:40] = _stamp(received)
            reply[40:48] = _stamp(time.time() + offset_s)
            sock.sendto(bytes(reply), addr)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(sock.getsockname()[1])
    finally:
        stop.set()
        thread.join(2)
        sock.close()
