"""Command actions given exactly what they act on: a real engine, store, forwarder and an
uplink that is built but never started (so never connected)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.commands import AckAlarmArgs, CommandRejectedError, ResendArgs
from agent.runtime import RuntimeStats
from agent.runtime.actions import CommandActions
from agent.runtime.alarms import AlarmRecorder
from agent.runtime.alarmstate import AlarmBook
from agent.runtime.build import forwarder, open_store
from agent.runtime.sink import RecordSink
from buffer.record import Stream
from tests.agent.runtime.conftest import NOW, make_components
from tests.agent.runtime.helpers import batch, bodies


@pytest.fixture
def actions(tmp_path: Path) -> Iterator[CommandActions]:
    c = make_components(tmp_path, uplink=True, extra="latch = true\n")
    c.paths.data_dir.mkdir(parents=True)
    store = open_store(c)
    stats = RuntimeStats()
    sink = RecordSink(store=store, stats=stats, clock_ms=c.clock_ms, wake=c.bridge.wake)
    assert c.uplink is not None
    fwd = forwarder(c, store=store, uplink=c.uplink)
    alarms = AlarmRecorder(
        tags=c.tags,
        book=AlarmBook(gateway=c.cfg.gateway.id, tags=c.tags, engine=c.engine),
        sink=sink,
        stats=stats,
    )
    b = batch([(0, NOW, 95.0, 0), (0, NOW + 1000, 10.0, 0)])
    alarms.record(c.engine.evaluate(b.tag, b.ts_ms, b.value, b.quality))  # raised, latched
    a = CommandActions(
        tag_index=c.tags.index,
        engine=c.engine,
        alarms=alarms,
        store=store,
        forwarder=fwd,
        uplink=c.uplink,
        max_resend=5,
        clock_ms=c.clock_ms,
    )
    yield a
    store.close()


def test_ack_alarm_appends_the_ack_with_who_and_why(actions: CommandActions) -> None:
    detail = actions.ack_alarm(AckAlarmArgs(tag="T1", alarm="high", user="ops", comment="seen"))
    assert detail.startswith("T1: high ")
    last = bodies(actions._store, Stream.ALARM)[-1]
    assert (last["user"], last["comment"]) == ("ops", "seen")
    assert actions.ack_alarm(AckAlarmArgs(tag="T2")) == "T2: nothing to acknowledge"


def test_unknown_tags_and_oversized_resends_are_rejected(actions: CommandActions) -> None:
    with pytest.raises(CommandRejectedError, match="unknown tag 'NOPE'"):
        actions.ack_alarm(AckAlarmArgs(tag="NOPE"))
    with pytest.raises(CommandRejectedError, match="at most 5 records"):
        actions.resend(ResendArgs(stream="alarm", from_seq=1, to_seq=6))


def test_resend_queues_stored_records_and_rebirth_needs_a_connection(
    actions: CommandActions,
) -> None:
    stored = len(bodies(actions._store, Stream.ALARM))
    assert stored >= 1
    assert actions.resend(ResendArgs(stream="alarm", from_seq=1, to_seq=5)) == (
        f"{stored} alarm records queued for resend"
    )
    assert actions.rebirth() == "not connected"
