"""Per-stream limits: a stream's own capacity and retention, and the [buffer] config that sets
them (defaults, overrides, unknown keys)."""

from __future__ import annotations

import os

import msgspec
import pytest

from buffer import Eviction, Stream, StreamLimit
from buffer.config import BufferConfig
from tests.buffer.conftest import T0_MS, Clock, OpenStore

DAY_MS = 86_400_000
SIZE = 12 + (1 + 100 + 16) + 64  # accounted bytes of one blob() record (see test_eviction)


def blob() -> bytes:
    return os.urandom(100)


def test_a_stream_over_its_own_capacity_evicts_its_own_oldest_telemetry_only(
    open_store: OpenStore, clock: Clock
) -> None:
    store = open_store(stream_limits={Stream.TELEMETRY: StreamLimit(capacity_bytes=3 * SIZE)})
    store.append(Stream.EVENT, [blob(), blob()])
    store.settle(accepted=[(Stream.EVENT, 1), (Stream.EVENT, 2)])  # delivered, evictable
    for _ in range(3):
        store.append(Stream.TELEMETRY, [blob()])
        clock.advance(1000)
    store.append(Stream.TELEMETRY, [blob()])
    assert [r.seq for r in store.resend(Stream.TELEMETRY, 1, 9)] == [2, 3, 4]
    assert len(store.resend(Stream.EVENT, 1, 2)) == 2  # other streams are not its room
    assert store.take_evictions() == [Eviction(Stream.TELEMETRY, 1, T0_MS, T0_MS, "capacity")]
    assert store.stats().streams[Stream.TELEMETRY].bytes == 3 * SIZE


def test_a_stream_over_capacity_drops_its_delivered_records_before_undelivered_ones(
    open_store: OpenStore,
) -> None:
    store = open_store(stream_limits={Stream.TELEMETRY: StreamLimit(capacity_bytes=2 * SIZE)})
    store.append(Stream.TELEMETRY, [blob(), blob()])
    store.settle(accepted=[(Stream.TELEMETRY, 2)])
    store.append(Stream.TELEMETRY, [blob()])
    assert [r.seq for r in store.resend(Stream.TELEMETRY, 1, 9)] == [1, 3]
    assert store.take_evictions() == []


def test_an_alarm_stream_capacity_drops_delivered_alarms_but_never_undelivered_ones(
    open_store: OpenStore,
) -> None:
    store = open_store(stream_limits={Stream.ALARM: StreamLimit(capacity_bytes=2 * SIZE)})
    store.append(Stream.ALARM, [blob(), blob()])
    store.settle(accepted=[(Stream.ALARM, 1)])
    store.append(Stream.ALARM, [blob(), blob()])
    assert [r.seq for r in store.resend(Stream.ALARM, 1, 9)] == [2, 3, 4]
    assert store.stats().streams[Stream.ALARM].bytes == 3 * SIZE  # over its capacity, kept
    assert store.take_evictions() == []


def test_the_total_capacity_still_applies_across_streams(open_store: OpenStore) -> None:
    store = open_store(
        capacity_bytes=3 * SIZE,
        stream_limits={Stream.TELEMETRY: StreamLimit(capacity_bytes=10 * SIZE)},
    )
    store.append(Stream.TELEMETRY, [blob(), blob()])
    store.append(Stream.ALARM, [blob(), blob()])
    assert [r.seq for r in store.resend(Stream.TELEMETRY, 1, 9)] == [2]
    assert store.stats().bytes == 3 * SIZE


def test_retention_is_per_stream_and_inherits_the_store_value(
    open_store: OpenStore, clock: Clock
) -> None:
    store = open_store(
        retention_days=30.0, stream_limits={Stream.TELEMETRY: StreamLimit(retention_days=7.0)}
    )
    store.append(Stream.TELEMETRY, [b"t-delivered", b"t-pending"])
    store.append(Stream.EVENT, [b"e-delivered"])
    store.settle(accepted=[(Stream.TELEMETRY, 1), (Stream.EVENT, 1)])
    clock.advance(7 * DAY_MS + 1)
    store.maintain()
    assert store.resend(Stream.TELEMETRY, 1, 2) == []
    assert [r.payload for r in store.resend(Stream.EVENT, 1, 1)] == [b"e-delivered"]
    assert store.take_evictions() == [Eviction(Stream.TELEMETRY, 1, T0_MS, T0_MS, "retention")]
    clock.advance(23 * DAY_MS)
    store.maintain()
    assert store.resend(Stream.EVENT, 1, 1) == []


def test_a_lowered_stream_capacity_is_enforced_by_maintain(
    open_store: OpenStore, clock: Clock
) -> None:
    store = open_store()
    for _ in range(4):
        store.append(Stream.TELEMETRY, [blob()])
        clock.advance(10)
    store.close()
    store = open_store(stream_limits={Stream.TELEMETRY: StreamLimit(capacity_bytes=SIZE)})
    store.maintain()
    assert [r.seq for r in store.resend(Stream.TELEMETRY, 1, 9)] == [4]
    assert [e.count for e in store.take_evictions()] == [3]


def test_stream_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity_bytes"):
        StreamLimit(capacity_bytes=0)
    with pytest.raises(ValueError, match="retention_days"):
        StreamLimit(retention_days=-1.0)


def test_the_config_defaults_keep_every_stream_on_the_store_values() -> None:
    cfg = BufferConfig()
    # the local incident stream has no [buffer.*] table: nothing there ages it out yet
    assert cfg.stream_limits() == dict.fromkeys((s for s in Stream if s.forwarded), StreamLimit())
    assert (cfg.capacity_bytes, cfg.reserve_bytes) == (1 << 30, 16 << 20)


def test_the_config_per_stream_tables_become_store_limits() -> None:
    cfg = msgspec.convert(
        {"telemetry": {"retention_days": 7, "capacity_mb": 512}, "alarm": {"retention_days": 90}},
        BufferConfig,
    )
    limits = cfg.stream_limits()
    assert limits[Stream.TELEMETRY] == StreamLimit(capacity_bytes=512 << 20, retention_days=7.0)
    assert limits[Stream.ALARM] == StreamLimit(retention_days=90.0)
    assert limits[Stream.EVENT] == StreamLimit()


def test_the_config_rejects_unknown_and_non_positive_stream_keys() -> None:
    with pytest.raises(msgspec.ValidationError, match="retention_dayz"):
        msgspec.convert({"telemetry": {"retention_dayz": 7}}, BufferConfig)
    with pytest.raises(msgspec.ValidationError, match="capacity_mb"):
        msgspec.convert({"event": {"capacity_mb": 0}}, BufferConfig)
