"""A real asyncio loop on a thread of its own, so synchronous tests can drive the loop-bound Uplink.

The :class:`~agent.uplink.Uplink` runs on an event loop and is not thread-safe. Tests written
as plain blocking code (wait for a subscriber, kill a broker, sleep) keep their shape by talking
to it through :class:`ThreadedUplink`: every call is made on the loop's thread and waited for.
Nothing is mocked: the uplink, its paho client and its sockets are the production ones.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, TypeVar

from agent.uplink import PublishResult, Uplink, UplinkStats

__all__ = ["LoopThread", "ThreadedUplink"]

T = TypeVar("T")


class LoopThread:
    """An event loop running forever on a daemon thread until :meth:`close`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="loop")
        self._thread.start()

    def call(self, fn: Callable[[], T], timeout_s: float = 30.0) -> T:
        """``fn()`` on the loop thread; its result or its exception here."""

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout_s)

    def wait(self, coro: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


class ThreadedUplink:
    """The Uplink's public surface, each call made on a private loop thread (blocking here).

    ``on_command`` and ``on_results`` given to the constructor run on the loop thread.
    """

    def __init__(self, **kwargs: Any) -> None:
        self._lt = LoopThread()
        self.uplink: Uplink = self._lt.call(lambda: Uplink(**kwargs))
        self.root = self.uplink.root

    def start(self) -> None:
        self._lt.call(self.uplink.start)

    def stop(self, *, timeout_s: float = 5.0) -> None:
        self._lt.wait(self.uplink.stop(timeout_s=timeout_s), timeout_s * 4 + 10)

    def close(self, *, timeout_s: float = 1.0) -> None:
        """Stop the uplink, then end the loop thread; idempotent."""
        if self._lt.loop.is_closed():
            return
        self.stop(timeout_s=timeout_s)
        self._lt.close()

    @property
    def connected(self) -> bool:
        return self._lt.call(lambda: self.uplink.connected)

    @property
    def inflight(self) -> int:
        return self._lt.call(lambda: self.uplink.inflight)

    def stats(self) -> UplinkStats:
        return self._lt.call(self.uplink.stats)

    def publish(
        self, suffix: str, payload: bytes, *, token: Hashable, retain: bool = False
    ) -> bool:
        return self._lt.call(
            lambda: self.uplink.publish(suffix, payload, token=token, retain=retain)
        )

    def take_results(self) -> list[PublishResult]:
        return self._lt.call(self.uplink.take_results)

    def set_meta(self, payload: bytes) -> None:
        self._lt.call(lambda: self.uplink.set_meta(payload))

    def publish_untracked(self, suffix: str, payload: bytes) -> bool:
        return self._lt.call(lambda: self.uplink.publish_untracked(suffix, payload))

    def rebirth(self) -> bool:
        return self._lt.call(self.uplink.rebirth)
