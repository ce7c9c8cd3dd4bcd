"""The local control socket: ``safeedge status`` asks, the runtime answers on its event loop.

Protocol: one request line (``status``), one JSON answer line (the :class:`StatusSnapshot`,
or ``{"error": ...}``), then the connection closes. A request longer than 64 bytes or slower
than 2 s is dropped. The socket is a unix stream socket, mode 0660 (group ``status_group``
when configured): only the agent's user and that group may connect. Nothing a client sends is
logged unescaped (kv quotes it).
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
from collections.abc import Callable
from pathlib import Path

import msgspec

from agent.logs import kv
from agent.runtime.status import StatusSnapshot

__all__ = ["ControlServer"]

log = logging.getLogger("safeedge.control")
_MAX_REQUEST = 64


class ControlServer:
    def __init__(self, *, path: Path, group: str, status: Callable[[], StatusSnapshot]) -> None:
        self.path = path
        self._group = group
        self._status = status
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            if self.path.is_socket():  # a stale socket of an earlier run (the store lock
                self.path.unlink()  # guarantees no other agent runs on this data dir)
        old = os.umask(0o117)  # created 0660: no window with a wider mode
        try:
            self._server = await asyncio.start_unix_server(self._handle, path=str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o660)
        if self._group:
            os.chown(self.path, -1, grp.getgrnam(self._group).gr_gid)
        log.info(kv("status_socket", path=self.path))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                line = await asyncio.wait_for(reader.readline(), 2.0)
            except (TimeoutError, ValueError, ConnectionError):
                return
            request = line[:_MAX_REQUEST].strip().decode("ascii", "replace")
            if request in ("", "status"):
                answer = msgspec.json.encode(self._status())
            else:
                log.warning(kv("status_bad_request", request=request[:32]))
                answer = msgspec.json.encode({"error": "unknown request; send 'status'"})
            writer.write(answer + b"\n")
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
