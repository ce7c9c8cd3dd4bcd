"""Forwarding: store → uplink, on the event loop.

The uplink runs on the agent's loop (agent/uplink/) and the forwarder works only when woken
(agent/forwarder.py): by a store append, PUBACKs, a new session or a resend. This module ties
them to the run: :class:`LoopBridge` routes the uplink's callbacks, :class:`Forwarding` runs the
forwarder, drains within the flush timeout at shutdown, and settles PUBACKs that arrived late.

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
    """The uplink's callbacks, routed to what the run attaches when it starts.

    The uplink is built (no I/O) before the loop runs, so the forwarder and the command handler
    are attached when the run starts; until then, and after :meth:`detach`, callbacks are
    dropped (a command arriving then is lost exactly as before: the platform retries or times
    out). Callbacks come on the loop thread, from inside paho's read; a command is handed to
    ``on_command`` right there, which must be O(1) (the bounded inbox of
    :mod:`agent.commands.inbox`: its worker task handles it later, outside paho's read). No
    loop callback is scheduled per message: a flood cannot grow the loop's ready queue.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_command: Callable[[bytes], None] | None = None
        self._forwarder: Forwarder | None = None

    def attach(
        self,
        loop: asyncio.AbstractEventLoop,
        on_command: Callable[[bytes], None] | None,
        forwarder: Forwarder | None = None,
    ) -> None:
        self._loop = loop
        self._on_command = on_command
        self._forwarder = forwarder

    def detach(self) -> None:
        self._on_command = None

    def wake(self) -> None:
        """A record was appended, PUBACKs arrived or a session started: the forwarder has work."""
        if self._forwarder is not None:
            self._forwarder.wake()

    def on_results(self) -> None:
        self.wake()

    def on_command(self, raw: bytes) -> None:
        handler = self._on_command
        if handler is not None:  # None: before the inbox exists or after shutdown began
            handler(raw)


class Forwarding:
    """Drives one :class:`Forwarder` from the event loop until cancelled."""

    def __init__(
        self,
        *,
        forwarder: Forwarder,
        uplink: Uplink,
        store: Store,
        flush_timeout_s: float,
    ) -> None:
        self.forwarder = forwarder
        self._uplink = uplink
        self._store = store
        self._flush_timeout_s = flush_timeout_s

    def start(self) -> None:
        self._uplink.start()

    async def run(self) -> None:
        """Run the forwarder until cancelled, starting with whatever the buffer held."""
        self.forwarder.wake()
        await self.forwarder.run()

    async def flush(self, forward: asyncio.Task[None], *, deadline: float | None = None) -> None:
        """Give in-flight and pending records a bounded chance to be delivered (until the
        flush timeout, or the monotonic ``deadline`` if earlier), then stop ``forward`` (the
        task running :meth:`run`)."""
        until = time.monotonic() + self._flush_timeout_s
        deadline = until if deadline is None else min(deadline, until)
        while time.monotonic() < deadline and self._uplink.connected:
            if self.forwarder.idle and not self.has_undelivered():
                break
            await asyncio.sleep(FORWARD_IDLE_S)
        forward.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await forward

    def has_undelivered(self) -> bool:
        """Records the uplink still has to deliver (local-only streams never are)."""
        streams = self._store.stats().streams.items()
        return any(st.undelivered for s, st in streams if s.forwarded)

    def settle_late_results(self) -> None:
        self.forwarder.settle_results()
        self.forwarder.flush_settles()  # no append will carry them now


async def stop_uplink(
    uplink: Uplink, forwarding: Forwarding | None, *, timeout_s: float = 5.0
) -> None:
    """Stop the uplink (disconnect within ``timeout_s``), then settle late PUBACKs."""
    await uplink.stop(timeout_s=timeout_s)
    if forwarding is not None:
        forwarding.settle_late_results()
