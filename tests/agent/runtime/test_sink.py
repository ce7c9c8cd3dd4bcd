"""The sink on a real Store whose telemetry is refused (a reserve larger than any disk):
failures are counted every time but logged once a minute; alarms and events still land."""

from __future__ import annotations

import asyncio
import logging
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
    assert not wake.is_set()  # nothing new to forward
    assert [r.getMessage().split()[0] for r in caplog.records] == ["append_failed"]
    sink.event("started", agent="x")
    assert wake.is_set()
    assert [e["kind"] for e in bodies(store, Stream.EVENT)] == ["started"]
    store.close()
