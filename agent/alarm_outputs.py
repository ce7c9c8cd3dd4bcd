"""Alarm outputs, agent side: which alarms drive which ``[[outputs]]`` entry, and the loop
that writes them (the writes themselves are :mod:`drivers.outputs`).

Monitoring-grade only (docs/outputs.md): the certified gas detection system keeps the safety
function.

``[[outputs]]`` (:class:`agent.config.AlarmOutputConfig`) = a
:class:`drivers.outputs.OutputConfig` (where and how to write) plus ``when``
(:class:`agent.config.OutputWhen`): the output is *in alarm* while at least one alarm matches —
a tag selected by ``tags`` (names), ``match`` (a glob, as in ``[[rules]]``) or ``devices`` (every
tag of those devices; with none of the three: every tag), of a kind in ``kinds``, at level
``>= min_level``, and, with ``unacknowledged = true``, not yet acknowledged (a siren that an
acknowledgement silences while the beacon stays on until the alarm clears).

Sans-I/O parts: :class:`AlarmStates` folds the rule engine's events into the current state of
every alarm; :class:`OutputPolicy` answers "in alarm?" for one output. :class:`AlarmOutputs`
runs the writers: on every :meth:`AlarmOutputs.step` each output is written if its state
changed (or re-asserted when due) and its heartbeat beaten; every output write (re-assertions
included) is reported as ``output_written``; a failed write as ``output_failed`` when it starts
failing and then once a minute while it keeps failing; heartbeats only when they start or stop
failing.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from agent.config.schema import AlarmOutputConfig, OutputWhen
from drivers.outputs import OutputWriter, WriteResult
from rules.events import AlarmEvent, AlarmKind

__all__ = [
    "AlarmOutputConfig",
    "AlarmOutputs",
    "AlarmStates",
    "OutputPolicy",
    "OutputWhen",
]


@dataclass(slots=True)
class _Alarm:
    level: int
    unacked: bool


class AlarmStates:
    """The current level and acknowledgement of every active alarm, from its events
    (raise/escalate: unacknowledged; ack: acknowledged; clear: gone; return: level 0 but still
    unacknowledged, a latched alarm)."""

    def __init__(self) -> None:
        self.alarms: dict[tuple[int, AlarmKind], _Alarm] = {}
        # (tag index, kind) → True while the alarm is shelved (the console's shelves): it is
        # still evaluated and recorded, but drives no output
        self.suppressed: Callable[[int, str], bool] | None = None

    def restore(self, alarms: Iterable[tuple[int, AlarmKind, int, bool]]) -> None:
        """Start from the alarms open before a restart: (tag index, kind, level, unacked)
        each, as the restored alarm state has them; replaces whatever was known."""
        self.alarms = {(tag, kind): _Alarm(level, unacked) for tag, kind, level, unacked in alarms}

    def apply(self, events: Iterable[AlarmEvent]) -> None:
        for e in events:
            key = (e.tag, e.alarm)
            state = self.alarms.get(key)
            if e.event in ("raise", "escalate"):
                self.alarms[key] = _Alarm(e.level, True)
            elif e.event == "deescalate" and state is not None:
                state.level = e.level
            elif e.event == "return" and state is not None:
                state.level = 0
            elif e.event == "ack" and state is not None:
                state.unacked = False
            elif e.event == "clear":
                self.alarms.pop(key, None)


class OutputPolicy:
    """Decides whether one output is in alarm (see the module docstring)."""

    def __init__(
        self,
        when: OutputWhen,
        *,
        tag_names: Sequence[str],
        device_tags: Mapping[str, Sequence[str]],
    ) -> None:
        self.when = when
        chosen: set[str] = set(when.tags)
        if when.match:
            chosen |= {n for n in tag_names if fnmatch.fnmatchcase(n, when.match)}
        for device in when.devices:
            chosen |= set(device_tags.get(device, ()))
        everything = not (when.tags or when.match or when.devices)
        self.tags = frozenset(i for i, n in enumerate(tag_names) if everything or n in chosen)
        self.kinds = frozenset(when.kinds)

    def in_alarm(self, states: AlarmStates) -> bool:
        w = self.when
        hidden = states.suppressed
        return any(
            tag in self.tags
            and kind in self.kinds
            and a.level >= w.min_level
            and (a.unacked or not w.unacknowledged)
            and not (hidden is not None and hidden(tag, kind))
            for (tag, kind), a in states.alarms.items()
        )


FAILURE_REPORT_S = 60.0


class AlarmOutputs:
    """Runs every output's writer against the alarm states (one task calls :meth:`step`)."""

    def __init__(
        self,
        *,
        writers: Sequence[OutputWriter],
        policies: Sequence[OutputPolicy],
        states: AlarmStates,
        report: Callable[[str, WriteResult], None],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.states = states
        self._report = report
        self.written = 0
        self.failed = 0
        self._monotonic = monotonic
        self.writers: tuple[OutputWriter, ...] = ()
        self.policies: tuple[OutputPolicy, ...] = ()
        self._beating: list[bool] = []  # heartbeat failures reported on change
        self._failing: dict[int, float] = {}  # writer -> when its failure was last reported
        self.use(writers, policies)

    def use(self, writers: Sequence[OutputWriter], policies: Sequence[OutputPolicy]) -> None:
        """Write these from the next :meth:`step` on (a reload; not during a step). A writer
        that was already used keeps its reporting state."""
        if len(writers) != len(policies):
            raise ValueError("one policy per writer")
        was = {id(w): k for k, w in enumerate(self.writers)}
        beating = [self._beating[was[id(w)]] if id(w) in was else True for w in writers]
        failing = {
            k: self._failing[was[id(w)]]
            for k, w in enumerate(writers)
            if id(w) in was and was[id(w)] in self._failing
        }
        self.writers, self.policies = tuple(writers), tuple(policies)
        self._beating, self._failing = beating, failing

    async def step(self) -> None:
        """Write what is due; heartbeats are reported only when they start or stop failing."""
        for k, (writer, policy) in enumerate(zip(self.writers, self.policies, strict=True)):
            for result in (await writer.apply(policy.in_alarm(self.states)),
                           await writer.heartbeat()):  # fmt: skip
                if result is None:
                    continue
                if result.ok:
                    self.written += 1
                else:
                    self.failed += 1
                if result.heartbeat:
                    if result.ok != self._beating[k]:
                        self._beating[k] = result.ok
                        self._report("output_written" if result.ok else "output_failed", result)
                    continue
                if result.ok:
                    self._failing.pop(k, None)
                    self._report("output_written", result)
                    continue
                now = self._monotonic()  # a dead device: report again once a minute
                if now - self._failing.get(k, -1e18) >= FAILURE_REPORT_S:
                    self._failing[k] = now
                    self._report("output_failed", result)
