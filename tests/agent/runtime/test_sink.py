"""The sink on a real Store whose telemetry is refused (a reserve larger than any disk):
failures are counted every time but logged once a minute; the first refusal is reported at
once as a ``telemetry_refused`` event; alarms and events still land."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
from pathlib import Path

import pytest

from agent.runtime import RuntimeStats
from agent.runtime.build import open_store
from agent.runtime.sink import RecordSink
from buffer.record import Stream
from tests.agent.runtime.conftest import make_components
from tests.agent.runtime.helpers import bodies


def test_refused_appends_are_counted_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    c = make_components(tmp_path, buffer_extra="reserve_mb = 1e12\n")
    c.paths.data_dir.mkdir(parents=True)
    store = open_store(c)
    stats = RuntimeStats()
    wake = asyncio.Event()
    sink = RecordSink(store=store, stats=stats, clock_ms=c.clock_ms, wake=wake.set)
    with caplog.at_level(logging.ERROR, logger="safeedge.pipeline"):
        for _ in range(3):
            sink.append(Stream.TELEMETRY, [b'{"points":[]}', b'{"points":[]}'])
    assert stats.append_failures == 6
    assert wake.is_set()  # the refusal itself is news for the platform
    assert [r.getMessage().split()[0] for r in caplog.records] == ["append_failed"]
    sink.event("started", agent="x")
    kinds = [e["kind"] for e in bodies(store, Stream.EVENT)]
    assert kinds == ["telemetry_refused", "started"]
    store.close()


def test_one_transaction_commits_the_alarms_when_its_telemetry_is_refused(
    tmp_path: Path,
) -> None:
    c = make_components(tmp_path, buffer_extra="reserve_mb = 1e12\n")
    c.paths.data_dir.mkdir(parents=True)
    store = open_store(c)
    stats = RuntimeStats()
    sink = RecordSink(store=store, stats=stats, clock_ms=c.clock_ms, wake=lambda: None)
    told: list[int] = []
    before = store.commits
    with sink.one_transaction():
        sink.append(Stream.ALARM, [b'{"alarm":1}'], state={"k": b"v"})
        sink.after_commit(lambda: told.append(store.stats().streams[Stream.ALARM].last_seq))
        sink.append(Stream.TELEMETRY, [b'{"points":[]}'] * 3)
        assert (told, store.commits) == ([], before)  # nothing committed inside
    assert told == [1]
    assert store.commits - before == 3  # the records, the refusal counted, its report event
    assert stats.append_failures == 3
    assert store.state("k") == b"v"
    assert [e["kind"] for e in bodies(store, Stream.EVENT)] == ["telemetry_refused"]
    store.close()


def event_errors(body: object) -> list[str]:
    import jsonschema  # type: ignore[import-untyped]

    from agent.schemas import load_schemas

    validator = jsonschema.Draft202012Validator(load_schemas()["event"])
    return [e.message for e in validator.iter_errors(body)]


def test_a_damaged_buffer_becomes_buffer_corrupt_and_seq_gap_events_before_anything_else(
    tmp_path: Path,
) -> None:
    c = make_components(tmp_path)
    c.paths.data_dir.mkdir(parents=True)
    store = open_store(c)
    store.append(Stream.TELEMETRY, [b'{"points":[]}'] * 500)
    store.close()
    db = c.paths.buffer_path
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])
    store = open_store(c)
    sink = RecordSink(store=store, stats=RuntimeStats(), clock_ms=c.clock_ms, wake=lambda: None)
    sink.flush_reports()
    events = bodies(store, Stream.EVENT)
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "buffer_corrupt" and "seq_gap" in kinds
    corrupt = events[0]
    assert corrupt["salvaged"] + corrupt["undelivered_lost"] == 500
    assert corrupt["moved_to"].startswith(str(db) + ".corrupt-")
    gap = next(e for e in events if e["kind"] == "seq_gap")
    assert gap["stream"] == "telemetry" and gap["reason"] == "buffer_corrupt"
    assert all(event_errors(e) == [] for e in events), [event_errors(e) for e in events]
    sink.flush_reports()
    assert len(bodies(store, Stream.EVENT)) == len(events)  # each report once
    store.close()


def test_refused_telemetry_becomes_one_telemetry_refused_event(tmp_path: Path) -> None:
    c = make_components(tmp_path, buffer_extra="reserve_mb = 1e12\n")
    c.paths.data_dir.mkdir(parents=True)
    store = open_store(c)
    sink = RecordSink(store=store, stats=RuntimeStats(), clock_ms=c.clock_ms, wake=lambda: None)
    for _ in range(3):
        sink.append(Stream.TELEMETRY, [b'{"points":[]}', b'{"points":[]}'])
    sink.flush_reports()
    first, summary = bodies(store, Stream.EVENT)  # the first refusal at once, then the rest
    assert (first["kind"], first["count"], first["reason"]) == ("telemetry_refused", 2, "disk_full")
    assert (summary["kind"], summary["count"]) == ("telemetry_refused", 4)
    assert event_errors(first) == event_errors(summary) == []
    assert store.stats().streams[Stream.TELEMETRY].refused == 6
    store.close()


def test_maintenance_finds_corruption_while_running_and_recovers_without_ending(
    tmp_path: Path,
) -> None:
    c = make_components(tmp_path)
    c.paths.data_dir.mkdir(parents=True)
    store = open_store(c)
    store.append(Stream.TELEMETRY, [b'{"points":[1,2,3,4,5,6,7,8,9]}' * 20] * 800)
    store.close()
    store = open_store(c)
    sink = RecordSink(store=store, stats=RuntimeStats(), clock_ms=c.clock_ms, wake=lambda: None)

    async def main() -> None:
        task = asyncio.create_task(sink.maintain(every_s=0.05, check_every_s=0.05))
        await asyncio.sleep(0.2)
        db = c.paths.buffer_path
        with db.open("r+b") as f:  # the disk goes bad under the running agent
            for page in range(3, db.stat().st_size // 4096, 4):
                f.seek(page * 4096)
                f.write(b"\xee" * 64)
        for _ in range(100):
            if any(e["kind"] == "buffer_corrupt" for e in bodies(store, Stream.EVENT)):
                break
            await asyncio.sleep(0.05)
        assert not task.done()
        task.cancel()

    asyncio.run(main())
    corrupt = next(e for e in bodies(store, Stream.EVENT) if e["kind"] == "buffer_corrupt")
    assert corrupt["detected"] == "running" and corrupt["salvaged"] > 0
    assert store.append(Stream.TELEMETRY, [b"{}"])[0] > 800
    store.close()


def test_delivered_records_evicted_before_their_retention_become_buffer_evicted_events(
    tmp_path: Path,
) -> None:
    """Issue 13 item 6: a capacity below the retention shortens the local record; maintenance
    says so with ``buffer_evicted`` (``delivered: true``), valid against the event schema."""
    c = make_components(tmp_path, buffer_extra="capacity_mb = 1\n")  # the least allowed
    c.paths.data_dir.mkdir(parents=True)
    store = open_store(c)
    woke: list[asyncio.Event] = []  # made on the test's loop; set by the sink's appends
    sink = RecordSink(
        store=store, stats=RuntimeStats(), clock_ms=c.clock_ms, wake=lambda: woke[0].set()
    )
    woke.append(asyncio.Event())  # the appends below set it: not awaited
    for _ in range(30):  # 3 MB, delivered at once: pushed out long before their 30 days
        payloads = [b'{"pad":"%s"}' % os.urandom(500).hex().encode() for _ in range(100)]
        seqs = store.append(Stream.TELEMETRY, payloads)
        store.settle(accepted=[(Stream.TELEMETRY, s) for s in seqs])

    async def one_pass() -> None:
        woke[0] = asyncio.Event()
        task = asyncio.create_task(sink.maintain(every_s=0.0, check_every_s=1e9))
        await woke[0].wait()  # the first event appended by maintenance
        task.cancel()

    asyncio.run(asyncio.wait_for(one_pass(), 30))
    evicted = [e for e in bodies(store, Stream.EVENT) if e["kind"] == "buffer_evicted"]
    assert evicted[0]["stream"] == "telemetry" and evicted[0]["delivered"] is True
    assert evicted[0]["count"] > 0 and evicted[0]["first_ts"] <= evicted[0]["last_ts"]
    assert event_errors(evicted[0]) == []
    store.close()


def test_a_full_disk_keeps_the_polls_alarm_when_its_incident_window_does_not_fit(
    tmp_path: Path,
) -> None:
    # One transaction per poll must not let the local incident window (large, not protected
    # by the reserve) take the poll's alarm down with it on a full disk: a real tmpfs.
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)],
                          capture_output=True, check=False)  # fmt: skip
    assert done.returncode == 0, f"mount failed (the tests run as root): {done.stderr!r}"
    try:
        c = make_components(mnt, buffer_extra="reserve_mb = 1.0\n")
        c.paths.data_dir.mkdir(parents=True)
        store = open_store(c)
        stats = RuntimeStats()
        sink = RecordSink(store=store, stats=stats, clock_ms=c.clock_ms, wake=lambda: None)
        window = [os.urandom(2 << 20) for _ in range(12)]  # 24 MiB that cannot compress
        with sink.one_transaction():
            sink.append(Stream.ALARM, [b'{"alarm":1}'], state={"alarm:GT-1": b"raised"})
            sink.append(Stream.INCIDENT, window, state={"incident:open": b"inc-1"})
        assert store.stats().streams[Stream.ALARM].last_seq == 1
        assert store.state("alarm:GT-1") == b"raised"
        assert store.state("incident:open") is None  # not stored without its records
        assert store.stats().streams[Stream.INCIDENT].last_seq == 0
        assert stats.append_failures == len(window)
        store.close()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
