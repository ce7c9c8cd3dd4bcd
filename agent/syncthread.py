"""One long-lived thread for the forwarder's WAL fsyncs.

``asyncio.to_thread`` costs, per call, a context copy, an executor submit (a condition and a
queue), a ``concurrent.futures.Future`` with its own condition, and the callbacks that chain
it to an asyncio future; on this project's 2-core boxes that was ~0.13 ms of CPU and several
futex round trips for every poll's one fsync, next to ~0.1 ms for the fsync itself. Here a job
is one ``SimpleQueue.put`` and its end one ``call_soon_threadsafe``.

Invariants:
- Jobs run one at a time, in order, never on the loop thread.
- A job's future gets its result or exception; a cancelled future is left alone (the job
  still runs to its end: a WalSync closes its descriptor either way).
- :meth:`SyncThread.close` lets the thread end after the job it is running; a job submitted
  after close starts a new thread.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable

__all__ = ["SyncThread"]

_Job = tuple[Callable[[], None], "asyncio.Future[None]"] | None


def _settle(fut: asyncio.Future[None], exc: BaseException | None) -> None:
    if fut.cancelled():
        return
    if exc is None:
        fut.set_result(None)
    else:
        fut.set_exception(exc)


class SyncThread:
    """Runs blocking calls on one thread of its own; create and use it on the loop thread."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[_Job] | None = None
        self.started = 0  # threads started (tests read it)

    def run(self, fn: Callable[[], None]) -> asyncio.Future[None]:
        """Queue ``fn``; the future is done when it returned or raised."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        if self._jobs is None:
            self._jobs = queue.SimpleQueue()
            threading.Thread(
                target=self._work, args=(self._jobs, loop), name=self._name, daemon=True
            ).start()
            self.started += 1
        self._jobs.put((fn, fut))
        return fut

    def close(self) -> None:
        if self._jobs is not None:
            self._jobs.put(None)
            self._jobs = None

    @staticmethod
    def _work(jobs: queue.SimpleQueue[_Job], loop: asyncio.AbstractEventLoop) -> None:
        while (job := jobs.get()) is not None:
            fn, fut = job
            exc: BaseException | None = None
            try:
                fn()
            except BaseException as e:  # handed to the awaiting task, whatever it is
                exc = e
            try:
                loop.call_soon_threadsafe(_settle, fut, exc)
            except RuntimeError:  # the loop closed under the job: nobody awaits it
                return
