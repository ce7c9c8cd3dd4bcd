"""The forwarder on the event loop with the real Uplink and a real Mosquitto: it works when woken
(an append, PUBACKs, a new session, the drain-rate bucket refilling) and not otherwise."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from agent.config import UplinkConfig
from agent.forwarder import SETTLE_LINGER_S, Forwarder
from agent.uplink import Uplink
from buffer import Store
from buffer.record import Stream
from tests.conftest import BrokerFactory
from tests.support.mosquitto import Broker

pytestmark = pytest.mark.integration


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def until(cond: Callable[[], bool], timeout_s: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():  # the test's own check of the system under test
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout_s} s")
        await asyncio.sleep(0.01)


def run_with(
    broker: Broker,
    tmp_path: Path,
    body: Callable[[Store, Uplink, Forwarder], Awaitable[None]],
    *,
    drain_rate: float = 0.0,
) -> None:
    async def main() -> None:
        store = Store.open(path=tmp_path / "b.db", key_file=tmp_path / "b.key", gateway_id="G1")
        fwd: Forwarder | None = None

        def wake() -> None:  # as the runtime wires it: PUBACKs and sessions wake the forwarder
            if fwd is not None:
                fwd.wake()

        cfg = UplinkConfig(host=broker.host, port=broker.port, reconnect_min_s=0.05)
        up = Uplink(config=cfg, site="S1", gateway="G1", agent_version="0", on_results=wake)
        fwd = Forwarder(
            store=store, uplink=up, site="S1", gateway="G1", backfill_after_s=10,
            max_inflight=20, clock_ms=now_ms, drain_rate=drain_rate,
        )  # fmt: skip
        task = asyncio.create_task(fwd.run())
        up.start()
        try:
            await body(store, up, fwd)
        finally:
            task.cancel()
            await up.stop(timeout_s=1)
            store.close()

    asyncio.run(main())


def test_an_idle_forwarder_is_never_woken_and_an_append_wakes_it(
    broker: Broker, tmp_path: Path
) -> None:
    async def body(store: Store, up: Uplink, fwd: Forwarder) -> None:
        await until(lambda: up.connected, what="connected")
        await asyncio.sleep(0.3)  # the CONNACK's wakeup and its state/meta PUBACKs
        woken = fwd.wakeups
        await asyncio.sleep(1.0)
        assert fwd.wakeups == woken  # nothing to do: no timer, no poll
        store.append(Stream.TELEMETRY, [b'{"points": []}'] * 45)
        fwd.wake()  # what the runtime does after every Store.append
        await until(lambda: fwd.stats.delivered == 45, what="45 delivered")
        # 45 records through a window of 20: a few wakeups (PUBACK batches), not one per 20 ms.
        assert fwd.wakeups - woken <= 20, fwd.wakeups - woken
        settled = fwd.wakeups
        await asyncio.sleep(0.5)
        assert fwd.wakeups == settled

    run_with(broker, tmp_path, body)


def test_records_stored_while_disconnected_go_out_when_the_session_starts(
    make_broker: BrokerFactory, tmp_path: Path
) -> None:
    broker = make_broker()
    broker.kill()

    async def body(store: Store, up: Uplink, fwd: Forwarder) -> None:
        store.append(Stream.ALARM, [b"{}"] * 3)
        fwd.wake()  # nothing can go out yet; the connect must wake it again
        await asyncio.sleep(0.3)
        assert fwd.stats.published == 0
        await asyncio.to_thread(broker.start)
        await until(lambda: fwd.stats.delivered == 3, what="delivered after the connect")

    run_with(broker, tmp_path, body)


def test_a_throttled_backlog_resumes_by_itself_when_the_bucket_refills(
    broker: Broker, tmp_path: Path
) -> None:
    async def body(store: Store, up: Uplink, fwd: Forwarder) -> None:
        await until(lambda: up.connected, what="connected")
        store.append(Stream.TELEMETRY, [b'{"points":[]}'] * 30, created_ms=now_ms() - 3_600_000)
        fwd.wake()  # once: the refill timer must do the rest
        t0 = time.monotonic()
        await until(lambda: fwd.stats.delivered == 30, timeout_s=5, what="backlog drained")
        assert 0.3 <= time.monotonic() - t0 <= 2.5  # 10 beyond the first 20 at 20/s

    run_with(broker, tmp_path, body, drain_rate=20.0)


def test_a_store_error_is_transient_the_answers_are_kept_and_the_task_goes_on(
    broker: Broker, tmp_path: Path
) -> None:
    async def body(store: Store, up: Uplink, fwd: Forwarder) -> None:
        await until(lambda: up.connected, what="connected")
        # A store that refuses every write: SQLite's own refusal (query_only), standing in for
        # a disk error the test cannot produce on demand (the full disk is covered end to end
        # in tests/agent/test_buffer_resilience.py).
        store.append(Stream.ALARM, [b"{}"] * 5)
        store._core.live().execute("PRAGMA query_only = ON")
        fwd.wake()
        # the PUBACKs are taken at once; writing them (with no append to ride along, after
        # SETTLE_LINGER_S) is refused
        await until(lambda: fwd.stats.delivered == 5, what="the broker's answers taken")
        await until(lambda: fwd.stats.store_errors > 0, timeout_s=5, what="a settle refused")
        await asyncio.sleep(1.5)  # retried (every STORE_RETRY_S) and still refused
        assert fwd.stats.store_errors >= 2
        assert store.staged_settles == 5
        alarms = store.stats().streams[Stream.ALARM]  # its own write refused: nothing changed
        assert (alarms.delivered, alarms.undelivered) == (0, 5)
        assert store.lease(max_count=10, max_bytes=1 << 20) == []  # still leased, not resent
        assert not task_of(fwd).done()
        store._core.live().execute("PRAGMA query_only = OFF")
        await until(lambda: store.staged_settles == 0, what="the kept answers applied")
        assert store.stats().streams[Stream.ALARM].delivered == 5

    run_with(broker, tmp_path, body)


def task_of(fwd: Forwarder) -> asyncio.Task[None]:
    for task in asyncio.all_tasks():
        if getattr(task.get_coro(), "__qualname__", "") == "Forwarder.run":
            return task
    raise AssertionError("the forward task is gone")


def test_a_poll_is_one_commit_the_next_append_carries_the_previous_deliveries(
    broker: Broker, tmp_path: Path
) -> None:
    async def body(store: Store, up: Uplink, fwd: Forwarder) -> None:
        await until(lambda: up.connected, what="connected")
        await asyncio.sleep(0.3)  # the CONNACK's state/meta PUBACKs
        conn = store._core.live()
        state = "SELECT state FROM records WHERE stream = 2 AND seq = ?"
        first = commits = store.commits
        for poll in range(1, 6):  # a 0.9 s device poll: append, wake, PUBACK, next poll
            if poll > 1:  # 3.6 s in all: the linger (2 s) restarts with each append
                await asyncio.sleep(0.9)
                assert store.commits == commits + 1, "a settle-only commit between two polls"
            commits = store.commits
            store.append(Stream.TELEMETRY, [b'{"points":[]}'])
            fwd.wake()
            await until(lambda n=poll: fwd.stats.delivered == n, what=f"poll {poll} delivered")
            assert store.commits == commits + 1  # its PUBACK wrote nothing yet
            assert store.staged_settles == 1
            if poll > 1:  # the previous poll's delivery rode along with this append
                assert conn.execute(state, (poll - 1,)).fetchone() == (1,)
            assert conn.execute(state, (poll,)).fetchone() == (0,)
            staged_at = time.monotonic()
        assert store.commits == first + 5  # five polls, five commits
        # no append follows the last one: its mark is written alone after the linger
        commits = store.commits
        await until(lambda: store.staged_settles == 0, timeout_s=SETTLE_LINGER_S + 2,
                    what="the last delivery written")  # fmt: skip
        assert time.monotonic() - staged_at >= SETTLE_LINGER_S - 0.1
        assert store.commits == commits + 1
        assert conn.execute(state, (5,)).fetchone() == (1,)

    run_with(broker, tmp_path, body)


def test_staged_deliveries_are_never_sent_twice_across_a_reconnect(
    broker: Broker, tmp_path: Path
) -> None:
    async def body(store: Store, up: Uplink, fwd: Forwarder) -> None:
        await until(lambda: up.connected, what="connected")
        store.append(Stream.EVENT, [b"{}"] * 4)
        fwd.wake()
        await until(lambda: fwd.stats.delivered == 4, what="4 delivered")
        assert store.staged_settles == 4
        store.release_all()  # what a disconnect does: the staged keep their leases
        published = fwd.stats.published
        fwd.wake()
        await asyncio.sleep(0.3)
        assert fwd.stats.published == published
        assert store.stats().streams[Stream.EVENT].delivered == 4  # stats writes them first
        assert store.staged_settles == 0

    run_with(broker, tmp_path, body)
