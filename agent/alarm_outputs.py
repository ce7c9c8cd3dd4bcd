"""Alarm outputs, agent side: which alarms drive which ``[[outputs]]`` entry, and the loop
that writes them (the writes themselves are :mod:`drivers.outputs`).

Monitoring-grade only (docs/outputs.md): the certified gas detection system keeps the safety
function.

``[[outputs]]`` = a :class:`drivers.outputs.OutputConfig` (where and how to write) plus
``when`` (:class:`OutputWhen`): the output is *in alarm* while at least one alarm matches —
a tag selected by ``tags`` (names), ``match`` (a glob, as in ``[[rules]]``) or ``devices`` (every
tag of those devices; with none of the three: every tag), of a kind in ``kinds``, at level
``>= min_level``, and, with ``unacknowledged = true``, not yet acknowledged (a siren that an
acknowledgement silences while the beacon stays on until the alarm clears).

Sans-I/O parts: :class:`AlarmStates` folds the rule engine's events into the current state of
every alarm; :class:`OutputPolicy` answers "in alarm?" for one output. :class:`AlarmOutputs`
runs the writers: on every :meth:`AlarmOutputs.step` each output is written if its state
changed (or re-asserted when due) and its heartbeat beaten; every output write (re-assertions
included) is reported as ``output_written``, every failed one (heartbeat included) as
``output_failed``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated

import msgspec

from drivers.outputs import OutputConfig, OutputWriter, WriteResult
from rules.events import AlarmEvent, AlarmKind

__all__ = [
    "AlarmOutputConfig",
    "AlarmOutputs",
    "AlarmStates",
    "OutputPolicy",
    "OutputWhen",
    "selection_problems",
]


class OutputWhen(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The alarms that put an output in alarm (see the module docstring)."""

    tags: tuple[str, ...] = ()
    match: str = ""
    devices: tuple[str, ...] = ()
    kinds: tuple[AlarmKind, ...] = ("high", "low")
    min_level: Annotated[int, msgspec.Meta(ge=1, le=3)] = 1
    unacknowledged: bool = False


class AlarmOutputConfig(OutputConfig, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One ``[[outputs]]`` entry: where to write (:class:`OutputConfig`) and ``when``."""

    when: OutputWhen = OutputWhen()


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
        return any(
            tag in self.tags
            and kind in self.kinds
            and a.level >= w.min_level
            and (a.unacked or not w.unacknowledged)
            for (tag, kind), a in states.alarms.items()
        )


def selection_problems(
    outputs: Sequence[AlarmOutputConfig],
    *,
    tag_names: Sequence[str],
    device_tags: Mapping[str, Sequence[str]],
) -> list[tuple[str, str, str]]:
    """``(key, message, hint)`` for ``when`` selections that name nothing that exists."""
    problems = []
    known = set(tag_names)
    for k, out in enumerate(outputs):
        key = f'outputs[{k}] "{out.name}".when'
        for tag in out.when.tags:
            if tag not in known:
                problems.append((f"{key}.tags", f'unknown tag "{tag}"', "name a configured tag"))
        if out.when.match and not any(fnmatch.fnmatchcase(n, out.when.match) for n in known):
            problems.append((f"{key}.match", f'"{out.when.match}" matches no tag',
                             "use a glob such as \"GT-*\""))  # fmt: skip
        for device in out.when.devices:
            if device not in device_tags:
                problems.append((f"{key}.devices", f'unknown device "{device}"',
                                 "name a device of [[devices]]"))  # fmt: skip
    return problems


class AlarmOutputs:
    """Runs every output's writer against the alarm states (one task calls :meth:`step`)."""

    def __init__(
        self,
        *,
        writers: Sequence[OutputWriter],
        policies: Sequence[OutputPolicy],
        states: AlarmStates,
        report: Callable[[str, WriteResult], None],
    ) -> None:
        if len(writers) != len(policies):
            raise ValueError("one policy per writer")
        self.writers = tuple(writers)
        self.policies = tuple(policies)
        self.states = states
        self._report = report
        self.written = 0
        self.failed = 0
        self._beating = [True] * len(self.writers)  # heartbeat failures reported on change

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
                self._report("output_written" if result.ok else "output_failed", result)
