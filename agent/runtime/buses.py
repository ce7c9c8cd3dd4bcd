"""The run's buses: devices opened once, one poll task per bus, and replacing some buses while
the others poll on (a reload that changed only some devices).

Invariants: a device is exited exactly once (early when its bus is replaced, else when the run
ends); a replaced bus's poll task has ended before its devices are closed and the new ones
opened, so two tasks never share a physical line; buses not replaced keep their task, their
connection and their poll phase.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any

from agent.runtime.scheduler import cancel_and_wait
from drivers import Device

__all__ = ["BusSet"]

Spawn = Callable[[str, Coroutine[Any, Any, None]], "asyncio.Task[None]"]
PollBus = Callable[[Sequence[Device]], Coroutine[Any, Any, None]]


class _Once:
    """Exits its device at most once (early by :meth:`BusSet.replace`, or by the stack)."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.closed = False

    async def __aenter__(self) -> _Once:
        await self.device.__aenter__()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self.closed:
            self.closed = True
            await self.device.__aexit__(t, e, tb)


class BusSet:
    def __init__(self, *, stack: AsyncExitStack) -> None:
        self._stack = stack
        self._held: dict[int, _Once] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._spawn: Spawn | None = None
        self._poll: PollBus | None = None

    async def open(self, devices: Iterable[Device]) -> None:
        for device in devices:
            self._held[id(device)] = await self._stack.enter_async_context(_Once(device))

    def start(self, buses: Mapping[str, Sequence[Device]], *, spawn: Spawn, poll: PollBus) -> None:
        self._spawn, self._poll = spawn, poll
        for name, devices in buses.items():
            self._tasks[name] = spawn(f"poll {name}", poll(devices))

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        return list(self._tasks.values())

    async def replace(
        self, *, stop: Mapping[str, Sequence[Device]], start: Mapping[str, Sequence[Device]]
    ) -> None:
        """End the poll tasks of ``stop`` and close their devices, then open ``start``'s
        devices and poll them. The caller decides which buses (agent/runtime/reload.py)."""
        if self._spawn is None or self._poll is None:
            raise RuntimeError("BusSet.replace before start")
        ending = [self._tasks.pop(name) for name in stop if name in self._tasks]
        await cancel_and_wait(ending)
        for devices in stop.values():
            for device in devices:
                held = self._held.pop(id(device), None)
                if held is not None:
                    await held.__aexit__(None, None, None)
        for name, devices in start.items():
            await self.open(devices)
            self._tasks[name] = self._spawn(f"poll {name}", self._poll(devices))
