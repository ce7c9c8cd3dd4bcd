"""Alarm outputs after a restart: they start from the restored alarm state, not de-energised
until the next event. Real store files; the engine, book and recorder of two runs in a row
(the output writers are not needed: the decision is the policies' over the states)."""

from __future__ import annotations

from pathlib import Path

from agent.alarm_outputs import AlarmStates, OutputPolicy
from agent.config.schema import OutputWhen
from agent.runtime import RuntimeStats
from agent.runtime.alarms import AlarmRecorder
from agent.runtime.alarmstate import PREFIX, AlarmBook
from agent.runtime.build import Components, open_store
from agent.runtime.sink import RecordSink
from buffer import Store
from tests.agent.runtime.conftest import NOW, make_components
from tests.agent.runtime.helpers import batch


def _run(c: Components) -> tuple[AlarmRecorder, AlarmStates, list[int], Store]:
    store = open_store(c)
    sink = RecordSink(store=store, stats=RuntimeStats(), clock_ms=c.clock_ms, wake=lambda: None)
    book = AlarmBook(gateway=c.cfg.gateway.id, tags=c.tags, engine=c.engine)
    book.restore(store.states(prefix=PREFIX))
    states = AlarmStates()
    woken: list[int] = []
    alarms = AlarmRecorder(tags=c.tags, book=book, sink=sink, stats=RuntimeStats(),
                           states=states, changed=lambda: woken.append(1))  # fmt: skip
    return alarms, states, woken, store


def test_outputs_in_alarm_before_a_restart_are_in_alarm_again_at_start(tmp_path: Path) -> None:
    c = make_components(tmp_path, extra="latch = true\n")
    c.paths.data_dir.mkdir(parents=True)
    siren = OutputPolicy(OutputWhen(min_level=1), tag_names=c.tags.names, device_tags={})
    beacon = OutputPolicy(OutputWhen(unacknowledged=True), tag_names=c.tags.names,
                          device_tags={})  # fmt: skip
    alarms, states, _, store = _run(c)
    b = batch([(0, NOW, 95.0, 0)])  # T1 over its high
    alarms.record(c.engine.evaluate(b.tag, b.ts_ms, b.value, b.quality))
    assert siren.in_alarm(states) and beacon.in_alarm(states)
    store.close()  # the first run ends

    again = make_components(tmp_path, extra="latch = true\n")  # a new process: fresh engine
    alarms2, states2, woken, store2 = _run(again)
    assert not siren.in_alarm(states2)  # nothing seen yet: this was the bug
    assert alarms2.seed_outputs() == 1
    assert siren.in_alarm(states2) and beacon.in_alarm(states2)
    assert woken  # the outputs task is woken to write them now
    store2.close()


def test_an_acknowledged_alarm_restores_acknowledged(tmp_path: Path) -> None:
    c = make_components(tmp_path, extra="latch = true\n")
    c.paths.data_dir.mkdir(parents=True)
    unacked = OutputPolicy(OutputWhen(unacknowledged=True), tag_names=c.tags.names,
                           device_tags={})  # fmt: skip
    alarms, states, _, store = _run(c)
    b = batch([(0, NOW, 95.0, 0)])
    alarms.record(c.engine.evaluate(b.tag, b.ts_ms, b.value, b.quality))
    alarms.record(c.engine.acknowledge(0, NOW + 1, "high"))
    assert not unacked.in_alarm(states)
    store.close()

    again = make_components(tmp_path, extra="latch = true\n")
    alarms2, states2, _, store2 = _run(again)
    alarms2.seed_outputs()
    assert states2.alarms and not unacked.in_alarm(states2)  # active, but acknowledged
    store2.close()
