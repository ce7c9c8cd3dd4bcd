"""The incident recorder in the runtime: every polled batch and every alarm event go through it,
and the windows it seals go to the buffer's ``incident`` stream (agent/review/recorder.py).

Built from ``[review.recorder]`` (absent or ``enabled = false``: no recorder). It sees each batch
before report-by-exception thins the telemetry, so an incident window holds every poll's
samples. Event loop thread only, like the sink it appends through.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from agent.config import AgentConfig
from agent.logs import kv
from agent.runtime.alarmstate import OpenAlarm
from agent.runtime.sink import RecordSink
from agent.tags import TagTable
from buffer import StoreError
from buffer.record import Stream
from drivers import SampleBatch
from rules import RuleEngine
from rules.events import AlarmEvent

if TYPE_CHECKING:  # imported when a recorder is built: a site without one does not load it
    from agent.review.recorder import IncidentRecorder

__all__ = [
    "STATE_KEY",
    "IncidentTap",
    "incident_limits",
    "incident_recorder",
    "recorder_warnings",
    "tag_poll_periods",
]

log = logging.getLogger("safeedge.pipeline")

_LIMITS = ("high", "high_high", "low", "low_low")
_NO_SAMPLES = SampleBatch.empty()


def incident_recorder(
    cfg: AgentConfig, tags: TagTable, engine: RuleEngine
) -> IncidentRecorder | None:
    """The recorder ``[review.recorder]`` asks for, with each tag's limits (no I/O). Its tag
    names were checked with the config (agent/review/config.py ``review_issues``). Logs the
    ring's warning when its budget holds less than ``pre_s`` (agent/review/ring.py)."""
    rc = cfg.review.recorder
    if not rc.enabled:
        return None
    recorder = _recorder(cfg, tags, incident_limits(tags, engine))
    if recorder.plan.warning:
        log.warning(kv("incident_ring_too_small", note=recorder.plan.warning))
    return recorder


def recorder_warnings(cfg: AgentConfig) -> list[str]:
    """``safeedge check-config``: the ring's warning when its budget holds less than
    ``pre_s`` at the configured poll periods (no I/O; the recorder is cheap to build)."""
    if not cfg.review.recorder.enabled:
        return []
    warning = _recorder(cfg, TagTable(cfg), {}).plan.warning
    return [warning] if warning else []


def _recorder(
    cfg: AgentConfig, tags: TagTable, limits: dict[str, dict[str, float]]
) -> IncidentRecorder:
    from agent.review.recorder import IncidentRecorder  # lazy: see the TYPE_CHECKING import

    periods = tag_poll_periods(cfg)
    return IncidentRecorder(
        config=cfg.review.recorder,
        tag_names=tags.names,
        devices=[t.device for t in tags],
        units=[t.unit for t in tags],
        limits=limits,
        poll_s=[periods.get(t.name, 1.0) for t in tags],
    )


def tag_poll_periods(cfg: AgentConfig) -> dict[str, float]:
    """Each tag's poll period: its poll group's, else its device's."""
    out: dict[str, float] = {}
    for device in cfg.devices:
        groups = {g.name: g.poll_interval_s for g in getattr(device, "poll_groups", ())}
        for tag in device.tags:
            group = getattr(tag, "poll_group", None)
            out[tag.name] = (
                groups.get(group, device.poll_interval_s) if group else device.poll_interval_s
            )
    return out


def incident_limits(tags: TagTable, engine: RuleEngine) -> dict[str, dict[str, float]]:
    """Each tag's rule limits as an incident report shows them (also after a reload)."""
    limits = {}
    for tag in tags:
        params = engine.params(tag.index)
        limits[tag.name] = {
            k: float(v) for k, v in params.items() if k in _LIMITS and isinstance(v, float | int)
        }
    return limits


STATE_KEY = "incident:open"
"""The buffer state key of the open incidents (IncidentRecorder.state), stored with every
append of incident records so it never disagrees with them."""


class IncidentTap:
    """Feeds the recorder and appends what it returns, with the recorder's open incidents."""

    def __init__(self, *, recorder: IncidentRecorder, sink: RecordSink) -> None:
        self._recorder = recorder
        self._sink = sink

    def restore(self, open_alarms: Sequence[OpenAlarm]) -> None:
        """At start, after the alarm state was restored: resume the incidents stored as open
        whose alarms are still active, close the others (reason ``interrupted``)."""
        active = [(a.tag, a.alarm, a.level, a.since_ms) for a in open_alarms]
        try:
            bodies = self._recorder.restore(self._sink.store.state(STATE_KEY), active)
        except (StoreError, ValueError) as exc:  # unreadable: those incidents stay without a close
            log.error(kv("incident_state_unreadable", error=exc))  # noqa: TRY400 - one line
            return
        resumed = self._recorder.open_incidents
        if bodies or resumed:
            log.info(kv("incidents_restored", resumed=len(resumed), interrupted=len(bodies)))
        self._append(bodies)

    def on_poll(self, batch: SampleBatch, events: Sequence[AlarmEvent]) -> None:
        tag, ts, value, quality = batch.tag, batch.ts_ms, batch.value, batch.quality
        self._append(self._recorder.feed(tag, ts, value, quality, events))

    def on_events(self, events: Sequence[AlarmEvent]) -> None:
        """Events without samples (an operator's acknowledgement)."""
        if events:
            b = _NO_SAMPLES
            self._append(self._recorder.feed(b.tag, b.ts_ms, b.value, b.quality, events))

    def close(self, now_ms: int) -> None:
        """At shutdown: close what is open (reason ``stopped``)."""
        self._append(self._recorder.close_all(now_ms))

    def _append(self, bodies: list[bytes]) -> None:
        if bodies:
            state = {STATE_KEY: self._recorder.state()}
            self._sink.append(Stream.INCIDENT, bodies, state=state)
