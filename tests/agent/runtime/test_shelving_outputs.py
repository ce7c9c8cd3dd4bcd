"""A shelved alarm is still recorded (with ``shelved: true``) but drives no alarm output, and a
shelf that starts, ends or expires makes the outputs decide again (ISA-18.2 shelving)."""

from __future__ import annotations

from pathlib import Path

from agent.alarm_outputs import AlarmStates, OutputPolicy
from agent.config import OutputWhen
from agent.runtime import RuntimeStats
from agent.runtime.alarms import AlarmRecorder
from agent.runtime.build import open_store
from agent.runtime.shelving import Shelving
from agent.runtime.sink import RecordSink
from buffer.record import Stream
from tests.agent.runtime.conftest import NOW, make_components
from tests.agent.runtime.helpers import batch, bodies


def test_a_shelved_alarm_is_recorded_but_keeps_its_output_off_until_the_shelf_ends(
    tmp_path: Path,
) -> None:
    now = [NOW]
    c = make_components(tmp_path, clock=lambda: now[0])
    c.paths.data_dir.mkdir(parents=True)
    store = open_store(c)
    stats = RuntimeStats()
    sink = RecordSink(store=store, stats=stats, clock_ms=c.clock_ms, wake=c.bridge.wake)
    states = AlarmStates()
    decided: list[int] = []
    alarms = AlarmRecorder(
        tags=c.tags, alarm_ids=c.alarm_ids, sink=sink, stats=stats, states=states,
        changed=lambda: decided.append(1),
    )  # fmt: skip
    shelving = Shelving(max_s=3600, clock_ms=lambda: now[0])
    alarms.shelving = shelving
    siren = OutputPolicy(OutputWhen(tags=("T1",)), tag_names=c.tags.names, device_tags={})

    shelving.shelve(tag="T1", alarm="high", user="op", reason="sensor under repair", duration_s=60)
    assert decided == [1]  # the shelf made the outputs decide again
    b = batch([(0, NOW, 95.0, 0)])
    alarms.record(c.engine.evaluate(b.tag, b.ts_ms, b.value, b.quality))
    [raised] = bodies(store, Stream.ALARM)
    assert raised["event"] == "raise" and raised["shelved"] is True  # still recorded, marked
    assert not siren.in_alarm(states)  # but the siren stays off

    now[0] += 61_000
    assert [s.tag for s in shelving.expire()] == ["T1"]
    assert len(decided) == 3  # the raise and the expiry both re-decided
    assert siren.in_alarm(states)  # the alarm is still active: the siren sounds now
    store.close()
