"""Forwarding: store → uplink, moved as it was from agent/pipeline.py.

This module is the seam for the uplink rewrite (uplink on the event loop, an event-driven
forwarder): everything that knows the uplink runs a network thread lives here — the thread
hop of :class:`LoopBridge`, the forward loop that idles ``FORWARD_IDLE_S``, the bounded drain
at shutdown, starting and stopping the uplink and settling PUBACKs that arrived late.

    forwarder: Store.lease() → Uplink.publish(QoS 1) → PUBACK → Store.settle()
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Final

from agent.forwarder import Forwarder
from agent.uplink import Uplink
from buffer import Store

__all__ = ["FORWARD_IDLE_S", "Forwarding", "LoopBridge", "stop_uplink"]

FORWARD_IDLE_S: Final = 0.02


class LoopBridge:
    """The uplink's network-thread callbacks, handed over to the event loop thread.

    The uplink is built (no I/O) before the loop runs, so the loop and the command handler are
    attached when the run starts; until then, and after the loop closed, callbacks are dropped
    (a command arriving then is lost exactly as before: the platform retries or times out).
    """

    def __init__(self, wake: asyncio.Event) -> None:
        self.wake = wake
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_command: Callable[[bytes], None] | None = None

    def attach(
        self, loop: asyncio.AbstractEventLoop, on_command: Callable[[bytes], None] | None
    ) -> None:
        self._loop = loop
        self._on_command = on_command

    def detach(self) -> None:
        self._on_command = None

    def on_results(self) -> None:
        """Network thread: PUBACKs arrived; wake the forwarder instead of letting it idle."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.wake.set)

    def on_command(self, raw: bytes) -> None:
        """Network thread: hand the bytes to the loop thread (store and engine live there)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._dispatch, raw)

    def _dispatch(self, raw: bytes) -> None:
        handler = self._on_command
        if handler is not None:  # None: before the processor exists or after shutdown began
            handler(raw)


class Forwarding:
    """Drives one :class:`Forwarder` from the event loop until cancelled."""

    def __init__(
        self,
        *,
        forwarder: Forwarder,
        uplink: Uplink,
        store: Store,
        wake: asyncio.Event,
        flush_timeout_s: float,
    ) -> None:
        self.forwarder = forwarder
        self._uplink = uplink
        self._store = store
        self._wake = wake
        self._flush_timeout_s = flush_timeout_s

    def start(self) -> None:
        self._uplink.start()

    async def run(self) -> None:
        """Pump while there is work; otherwise wait for an append or a PUBACK (or the idle)."""
        while True:
            if self.forwarder.pump() == 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), FORWARD_IDLE_S)
            else:
                await asyncio.sleep(0)

    async def flush(self, forward: asyncio.Task[None]) -> None:
        """Give in-flight and pending records a bounded chance to be delivered, then stop
        ``forward`` (the task running :meth:`run`)."""
        deadline = time.monotonic() + self._flush_timeout_s
        while time.monotonic() < deadline and self._uplink.connected:
            if self.forwarder.idle and not self.has_undelivered():
                break
            await asyncio.sleep(FORWARD_IDLE_S)
        forward.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await forward

    def has_undelivered(self) -> bool:
        return any(s.undelivered for s in self._store.stats().streams.values())

    def settle_late_results(self) -> None:
        self.forwarder.settle_results()


async def stop_uplink(uplink: Uplink, forwarding: Forwarding | None) -> None:
    """Stop the uplink's thread (blocking: in an executor), then settle late PUBACKs."""
    await asyncio.get_running_loop().run_in_executor(None, uplink.stop)
    if forwarding is not None:
        forwarding.settle_late_results()
