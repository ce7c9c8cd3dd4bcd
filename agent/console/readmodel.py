"""What the console shows, built from what the runtime already produces (no store reads).

- :class:`AlarmBoard`: active alarms and the shift's history, from the alarm events the
  :class:`~agent.runtime.alarms.AlarmRecorder` records (its observer is called right after the
  append, so the board never shows an alarm that is not stored).
- :class:`LiveValues`: last value, quality and time per tag, and a ring of the last minutes
  sampled at a fixed step for sparklines, from every batch :class:`~agent.runtime.ingest.Ingest`
  handles: numpy column assignments per batch, no Python object per sample.
- :func:`health`: devices, buffer backlog, uplink, config hash, degraded reasons.

The health part is this package's own small read-model over the runtime's parts, kept in one
function so the status snapshot of ``safeedge status`` (issue 13) can replace it. Event loop
thread only.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from agent.runtime.shelving import Shelf
from agent.runtime.status import StatusSnapshot
from agent.tags import TagTable
from drivers import Device, Quality, SampleBatch
from rules.events import AlarmEvent

__all__ = [
    "AlarmBoard",
    "BoardAlarm",
    "Health",
    "HistoryEntry",
    "LiveValues",
    "health",
    "health_from_status",
]

_FAULTS = ("fault", "stuck")


@dataclass(slots=True)
class BoardAlarm:
    tag: str
    alarm: str
    level: int
    since_ms: int
    value: float | None
    limit: float | None
    acked: bool = False
    returned: bool = False  # latched: back to normal, still waiting for an acknowledgement
    reason: str | None = None

    @property
    def grade(self) -> str:
        """``l2``, ``l1`` or ``fault``: the label and colour on the board."""
        if self.alarm in _FAULTS:
            return "fault"
        return "l2" if self.level >= 2 else "l1"

    @property
    def key(self) -> str:
        return f"{self.tag}/{self.alarm}"


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    ts_ms: int
    tag: str
    alarm: str
    event: str  # raise, escalate, deescalate, clear, return, ack, shelve, unshelve
    level: int
    value: float | None = None
    user: str | None = None
    comment: str | None = None
    source: str | None = None


class AlarmBoard:
    def __init__(self, *, tags: TagTable, history: int) -> None:
        self._names = tags.names
        self.active: dict[tuple[str, str], BoardAlarm] = {}
        self.history: deque[HistoryEntry] = deque(maxlen=history)
        self.version = 0
        self.changed_ms = 0  # wall clock of the last change (the latency is measured from it)
        self.listeners: list[Callable[[], None]] = []

    def on_events(self, events: Sequence[AlarmEvent]) -> None:
        for e in events:
            self._apply(self._names[e.tag], e)
        self._changed()

    def on_shelf(self, event: str, shelf: Shelf, *, user: str) -> None:
        comment = shelf.reason if event == "shelve" else None
        entry = HistoryEntry(
            int(time.time() * 1000), shelf.tag, shelf.alarm, event, 0, user=user, comment=comment
        )
        self.history.appendleft(entry)
        self._changed()

    def _changed(self) -> None:
        self.version += 1
        self.changed_ms = int(time.time() * 1000)
        for listener in self.listeners:
            listener()

    def _apply(self, tag: str, e: AlarmEvent) -> None:
        key = (tag, e.alarm)
        extra = e.extra
        limit = extra.get("limit")
        user = extra.get("user")
        comment = extra.get("comment")
        source = extra.get("source")
        self.history.appendleft(
            HistoryEntry(
                e.ts_ms, tag, e.alarm, e.event, e.level, e.value,
                user=str(user) if user is not None else None,
                comment=str(comment) if comment is not None else None,
                source=str(source) if source is not None else None,
            )
        )  # fmt: skip
        a = self.active.get(key)
        if e.event == "raise" or (a is None and e.event in ("escalate", "deescalate")):
            reason = extra.get("reason")
            self.active[key] = BoardAlarm(
                tag, e.alarm, e.level, e.ts_ms, e.value,
                float(limit) if isinstance(limit, float | int) else None,
                reason=str(reason) if reason is not None else None,
            )  # fmt: skip
        elif a is None:
            return
        elif e.event in ("escalate", "deescalate"):
            a.level, a.value, a.acked = e.level, e.value, e.event == "deescalate" and a.acked
            if isinstance(limit, float | int):
                a.limit = float(limit)
        elif e.event == "ack":
            a.acked = True
        elif e.event == "return":
            a.level, a.value, a.returned, a.acked = 0, e.value, True, False
        elif e.event == "clear":
            del self.active[key]


class LiveValues:
    """Last sample per tag plus ``points`` samples of the last ``span_s`` for sparklines."""

    def __init__(self, *, tags: TagTable, span_s: float, points: int = 60) -> None:
        n = len(tags)
        self.value = np.full(n, np.nan)
        self.quality = np.zeros(n, dtype=np.uint8)
        self.ts_ms = np.zeros(n, dtype=np.int64)
        self.ring = np.full((n, points), np.nan)
        self._head = 0
        self.steps = 0  # ring steps taken (sparklines change only when this does)
        self.step_s = span_s / points
        self._next_step = time.monotonic() + self.step_s
        self.version = 0
        self.online: dict[str, bool] = {}
        self.problems: dict[str, str] = {}  # device → why (bad samples of its last poll)

    def on_batch(self, device: Device, batch: SampleBatch) -> None:
        self.online[device.name] = device.online
        if len(batch):
            bad = batch.quality[batch.quality != 0]
            why = ""
            if len(bad):
                counts = np.bincount(bad, minlength=len(Quality)).tolist()
                why = ", ".join(f"{Quality(q).wire_name} ×{n}" for q, n in enumerate(counts) if n)
            lost = str(getattr(device, "lost_reason", "") or "")  # the drivers' kind of failure
            if lost:
                why += f"{', ' if why else ''}lost: {lost}"
            self.problems[device.name] = why
            self.value[batch.tag] = np.where(batch.quality == 0, batch.value, np.nan)
            self.quality[batch.tag] = batch.quality
            self.ts_ms[batch.tag] = batch.ts_ms
            self.version += 1
        now = time.monotonic()
        if now >= self._next_step:
            self._head = (self._head + 1) % self.ring.shape[1]
            self.ring[:, self._head] = self.value
            self.steps += 1
            self._next_step = now + self.step_s

    def ordered_ring(self) -> np.ndarray:
        """The ring of every tag, oldest sample first (NaN where no good value)."""
        return np.roll(self.ring, -(self._head + 1), axis=1)


@dataclass(frozen=True, slots=True)
class Health:
    devices: list[tuple[str, bool, str]]  # name, online, why (no answer, bad samples), or ""
    backlog: dict[str, int]  # undelivered records per stream
    uplink: str  # connected | disconnected | disabled
    config_hash: str
    degraded: list[str]
    append_failures: int
    polls: int


def health(
    *,
    devices: Sequence[Device],
    seen: dict[str, bool],
    problems: dict[str, str],
    backlog: dict[str, int],
    uplink_connected: bool | None,
    config_hash: str,
    append_failures: int,
    polls: int,
) -> Health:
    """The facts of ``safeedge status``, from the parts the runtime has (see module doc)."""
    rows: list[tuple[str, bool, str]] = []
    names = list(dict.fromkeys(d.name for d in devices))
    for name in names:
        online = seen.get(name)
        why = "" if online else ("not polled yet" if online is None else "no answer")
        extra = problems.get(name, "")
        why = f"{why}; {extra}" if why and extra else (why or extra)
        rows.append((name, bool(online), why))
    degraded = [f"device {n}: {w}" for n, ok, w in rows if w]
    state = "disabled" if uplink_connected is None else (
        "connected" if uplink_connected else "disconnected"
    )  # fmt: skip
    if state == "disconnected":
        degraded.append("uplink disconnected: records are kept in the buffer")
    if append_failures:
        degraded.append(f"buffer: {append_failures} appends failed")
    return Health(rows, backlog, state, config_hash, degraded, append_failures, polls)


def health_from_status(snap: StatusSnapshot, *, problems: dict[str, str]) -> Health:
    """The same facts from the operations status snapshot (agent/runtime/status.py, what
    ``safeedge status`` shows): device state and the driver's last error with its reason, the
    uplink, the backlog and the run's degraded reasons; ``problems`` (bad samples seen by the
    console) are added to a device's line."""
    rows: list[tuple[str, bool, str]] = []
    for d in snap.devices:
        online = d.state == "online"
        why = "" if online else ("not polled yet" if d.state == "unknown" else "no answer")
        if not online and d.last_error:
            reason = d.last_error_reason
            why = f"{reason}: {d.last_error}" if reason and reason != d.last_error else d.last_error
        extra = problems.get(d.name, "")
        why = f"{why}; {extra}" if why and extra else (why or extra)
        rows.append((d.name, online, why))
    degraded = [f"device {n}: {w}" for n, ok, w in rows if w]
    if snap.uplink.state == "disconnected":
        degraded.append("uplink disconnected: records are kept in the buffer")
    if snap.append_failures:
        degraded.append(f"buffer: {snap.append_failures} appends failed")
    degraded += snap.degraded
    backlog = {}
    if snap.buffer is not None:
        backlog = {name: s.undelivered for name, s in snap.buffer.streams.items()}
    return Health(rows, backlog, snap.uplink.state, snap.config_hash, degraded,
                  snap.append_failures, snap.polls)  # fmt: skip


def finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value
