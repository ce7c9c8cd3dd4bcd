"""The incident recorder in the runtime: every polled batch and every alarm event go through it,
and the windows it seals go to the buffer's ``incident`` stream (agent/review/recorder.py).

Built from ``[review.recorder]`` (absent or ``enabled = false``: no recorder). It sees each batch
before report-by-exception thins the telemetry, so an incident window holds every poll's
samples. Event loop thread only, like the sink it appends through.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from agent.config import AgentConfig
from agent.runtime.sink import RecordSink
from agent.tags import TagTable
from buffer.record import Stream
from drivers import SampleBatch
from rules import RuleEngine
from rules.events import AlarmEvent

if TYPE_CHECKING:  # imported when a recorder is built: a site without one does not load it
    from agent.review.recorder import IncidentRecorder

__all__ = ["IncidentTap", "incident_limits", "incident_recorder"]

_LIMITS = ("high", "high_high", "low", "low_low")
_NO_SAMPLES = SampleBatch.empty()


def incident_recorder(
    cfg: AgentConfig, tags: TagTable, engine: RuleEngine
) -> IncidentRecorder | None:
    """The recorder ``[review.recorder]`` asks for, with each tag's limits (no I/O). Its tag
    names were checked with the config (agent/review/config.py ``review_issues``)."""
    rc = cfg.review.recorder
    if not rc.enabled:
        return None
    from agent.review.recorder import IncidentRecorder  # lazy: see the TYPE_CHECKING import

    limits = incident_limits(tags, engine)
    return IncidentRecorder(
        config=rc,
        tag_names=tags.names,
        devices=[t.device for t in tags],
        units=[t.unit for t in tags],
        limits=limits,
    )


def incident_limits(tags: TagTable, engine: RuleEngine) -> dict[str, dict[str, float]]:
    """Each tag's rule limits as an incident report shows them (also after a reload)."""
    limits = {}
    for tag in tags:
        params = engine.params(tag.index)
        limits[tag.name] = {
            k: float(v) for k, v in params.items() if k in _LIMITS and isinstance(v, float | int)
        }
    return limits


class IncidentTap:
    """Feeds the recorder and appends what it returns."""

    def __init__(self, *, recorder: IncidentRecorder, sink: RecordSink) -> None:
        self._recorder = recorder
        self._sink = sink

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
            self._sink.append(Stream.INCIDENT, bodies)
