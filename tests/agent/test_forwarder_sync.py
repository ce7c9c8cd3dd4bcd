"""The forwarder's store work per poll: a real store, uplink and Mosquitto.

The WAL fsync runs off the event loop:
A disk stalled by other writers (another process's writeback) made ``os.fsync`` of the WAL take
tens to hundreds of milliseconds; done inside ``Store.lease`` on the loop thread, it stalled
polling, rules and PUBACKs with it (the read → arrival spikes of issue 18). The forwarder now
takes the sync to a worker thread and leases only what it covered.

Few store reads: the forwarder asks for a lease on every wake (the append, each PUBACK batch);
when nothing became leasable since the last lease ran dry, the store answers without a query.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import FrameType

import pytest

from agent.config import UplinkConfig
from agent.forwarder import Forwarder
from agent.uplink import Uplink
from buffer import Store
from buffer.record import Stream
from tests.conftest import BrokerFactory
from tests.support.mosquitto import Broker, Subscriber

pytestmark = pytest.mark.integration

RECORDS = 30


@contextlib.asynccontextmanager
async def _forwarding(store: Store, broker: Broker) -> AsyncIterator[Forwarder]:
    """A running forwarder on a connected uplink to ``broker`` (stopped on exit)."""
    woken: list[Forwarder] = []
    cfg = UplinkConfig(host=broker.host, port=broker.port, reconnect_min_s=0.05)
    up = Uplink(
        config=cfg,
        site="S1",
        gateway="G1",
        agent_version="0",
        on_results=lambda: woken[0].wake() if woken else None,
    )
    fwd = Forwarder(
        store=store,
        uplink=up,
        site="S1",
        gateway="G1",
        backfill_after_s=10,
        max_inflight=20,
        clock_ms=lambda: time.time_ns() // 1_000_000,
    )
    woken.append(fwd)
    up.start()
    task = asyncio.create_task(fwd.run())
    deadline = time.monotonic() + 10
    while not up.connected:
        assert time.monotonic() < deadline, "no session"
        await asyncio.sleep(0.01)
    try:
        yield fwd
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await up.stop(timeout_s=1.0)


def test_the_loop_thread_never_fsyncs_and_every_record_goes_out_after_a_sync(
    tmp_path: Path, make_broker: BrokerFactory
) -> None:
    broker = make_broker()
    store = Store.open(path=tmp_path / "b.db", key_file=tmp_path / "b.key", gateway_id="G1")
    fsyncs: dict[str, int] = {}  # thread name -> os.fsync calls seen (this thread only)
    syncs_before = store.syncs
    flowed: dict[str, int] = {}

    def count(frame: FrameType, event: str, arg: object) -> None:
        if event == "c_call" and arg is os.fsync:
            name = threading.current_thread().name
            fsyncs[name] = fsyncs.get(name, 0) + 1

    async def main() -> None:
        async with _forwarding(store, broker) as fwd:
            deadline = time.monotonic() + 10
            sys.setprofile(count)  # this thread: the loop's
            try:
                for i in range(RECORDS):  # what the sink does for each poll: append, then wake
                    store.append(Stream.TELEMETRY, [b'{"n": %d}' % i])
                    fwd.wake()
                    await asyncio.sleep(0.005)
                while store.stats().streams[Stream.TELEMETRY].delivered < RECORDS:
                    assert time.monotonic() < deadline + 10, "not all delivered"
                    await asyncio.sleep(0.01)
                flowed.update(fsyncs)
                # The probe sees an inline sync on this thread (the store's own, as before):
                store.append(Stream.EVENT, [b"probe"])
                store.lease(max_count=1, max_bytes=1 << 20)
            finally:
                sys.setprofile(None)

    with Subscriber(broker, "safeedge/v1/S1/G1/telemetry") as platform:
        asyncio.run(main())
        platform.wait_for(lambda m: b'"n": %d' % (RECORDS - 1) in m.payload)
    store.close()
    assert store.syncs > syncs_before + 1  # the records were leased after syncs ...
    assert flowed.get("MainThread", 0) == 0, flowed  # ... none of them on the loop's thread
    assert fsyncs.get("MainThread", 0) >= 1  # the probe: an fsync here is seen


def test_a_poll_costs_the_store_two_lease_queries_however_often_the_forwarder_wakes(
    tmp_path: Path, make_broker: BrokerFactory
) -> None:
    broker = make_broker()
    store = Store.open(path=tmp_path / "b.db", key_file=tmp_path / "b.key", gateway_id="G1")
    wakes: list[int] = []

    async def main() -> None:
        async with _forwarding(store, broker) as fwd:
            deadline = time.monotonic() + 10
            await asyncio.sleep(0.05)  # the session's own wake is done
            queries, wakeups = store.lease_queries, fwd.wakeups
            for i in range(RECORDS):  # one poll each: five records in one append, then a wake
                store.append(Stream.TELEMETRY, [b'{"n": %d, "k": %d}' % (i, k) for k in range(5)])
                fwd.wake()
                while store.stats().streams[Stream.TELEMETRY].delivered < 5 * (i + 1):
                    assert time.monotonic() < deadline + 10, "not delivered"
                    await asyncio.sleep(0.002)
            wakes.append(fwd.wakeups - wakeups)
            wakes.append(store.lease_queries - queries)

    asyncio.run(main())
    store.close()
    woke, queried = wakes
    assert woke >= 2 * RECORDS  # the append and at least one PUBACK batch each
    # The lease that finds the poll's records (the live telemetry query, the backlog query);
    # every other wake finds nothing new and asks nothing.
    assert queried <= 2 * RECORDS, (queried, woke)
