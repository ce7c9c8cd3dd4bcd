"""SyncThread: blocking calls on one thread of its own, results back on the loop."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from agent.syncthread import SyncThread


def _threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name]


def test_jobs_run_in_order_on_one_thread_that_is_not_the_loops() -> None:
    async def main() -> None:
        sync = SyncThread("t-order")
        ran: list[tuple[int, int]] = []
        loop_thread = threading.get_ident()

        def job(i: int) -> None:
            time.sleep(0.002 * (5 - i))  # the early ones take longest: order still holds
            ran.append((i, threading.get_ident()))

        await asyncio.gather(*(sync.run(lambda i=i: job(i)) for i in range(5)))
        assert [i for i, _ in ran] == [0, 1, 2, 3, 4]
        assert len({t for _, t in ran}) == 1 and ran[0][1] != loop_thread
        assert sync.started == 1
        sync.close()

    asyncio.run(main())


def test_an_exception_reaches_the_awaiting_task() -> None:
    async def main() -> None:
        sync = SyncThread("t-exc")

        def fail() -> None:
            raise OSError(5, "Input/output error")

        with pytest.raises(OSError, match="Input/output"):
            await sync.run(fail)
        await sync.run(lambda: None)  # the thread goes on
        sync.close()

    asyncio.run(main())


def test_a_cancelled_wait_lets_the_job_finish_and_nothing_complains() -> None:
    errors: list[object] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _l, ctx: errors.append(ctx))
        sync = SyncThread("t-cancel")
        started, release, done = threading.Event(), threading.Event(), threading.Event()

        def slow() -> None:
            started.set()
            release.wait(5)
            done.set()

        fut = sync.run(slow)
        assert await asyncio.to_thread(started.wait, 5)
        fut.cancel()
        release.set()
        assert await asyncio.to_thread(done.wait, 5)
        await sync.run(lambda: None)  # its end was handed back and ignored
        sync.close()

    asyncio.run(main())
    assert errors == []


def test_close_ends_the_thread_and_a_later_job_starts_another() -> None:
    async def main() -> None:
        sync = SyncThread("t-close")
        await sync.run(lambda: None)
        sync.close()
        deadline = time.monotonic() + 5
        while _threads("t-close"):
            assert time.monotonic() < deadline, "the thread did not end"
            await asyncio.sleep(0.01)
        await sync.run(lambda: None)
        assert sync.started == 2 and len(_threads("t-close")) == 1
        sync.close()

    asyncio.run(main())


def test_a_loop_closed_under_a_job_ends_the_thread_quietly() -> None:
    release = threading.Event()
    sync = SyncThread("t-gone")

    async def main() -> None:
        sync.run(lambda: release.wait(5))  # never awaited: the loop ends first

    asyncio.run(main())
    release.set()
    deadline = time.monotonic() + 5
    while _threads("t-gone"):
        assert time.monotonic() < deadline, "the thread outlived its loop"
        time.sleep(0.01)
