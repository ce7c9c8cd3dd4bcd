"""Run an async context manager (a pymodbus server, a serial line) on an event loop in a
thread, so a test can drive a CLI command that calls ``asyncio.run`` itself."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


@contextlib.contextmanager
def in_background(factory: Callable[[], contextlib.AbstractAsyncContextManager[T]]) -> Iterator[T]:
    """Enter ``factory()`` on a new loop in a thread; yield what it yields; exit it at the end."""
    ready = threading.Event()
    stop: asyncio.Event | None = None
    loop: asyncio.AbstractEventLoop | None = None
    box: dict[str, Any] = {}

    async def main() -> None:
        nonlocal stop, loop
        stop, loop = asyncio.Event(), asyncio.get_running_loop()
        try:
            async with factory() as value:
                box["value"] = value
                ready.set()
                await stop.wait()
        except BaseException as exc:
            box["error"] = exc
            ready.set()
            raise

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    assert ready.wait(10), "the background peer did not start"
    if "error" in box:
        raise box["error"]
    try:
        yield box["value"]
    finally:
        assert loop is not None and stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)


@contextlib.asynccontextmanager
async def tcp_peer(port: int, *devices: Any, **kwargs: Any) -> AsyncIterator[int]:
    from pymodbus.server import ModbusTcpServer

    server = ModbusTcpServer(list(devices), address=("127.0.0.1", port), **kwargs)
    await server.serve_forever(background=True)
    try:
        yield port
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]
