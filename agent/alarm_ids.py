"""Stable alarm ids: one id per occurrence of one alarm of one tag.

An occurrence starts with ``raise`` and ends with ``clear`` (after ``return`` + ``ack`` when
latched). Every event of the occurrence (escalate, deescalate, ack, return, clear) carries the
same id, so the platform can group them: ``{gateway}:{tag}:{alarm}:{raise ts_ms}``.
"""

from __future__ import annotations

__all__ = ["AlarmIds"]


class AlarmIds:
    def __init__(self, gateway: str) -> None:
        self._gateway = gateway
        self._open: dict[tuple[str, str], str] = {}

    def for_event(self, tag: str, alarm: str, event: str, ts_ms: int) -> str:
        key = (tag, alarm)
        if event == "raise" or key not in self._open:
            # An event of an occurrence that began before a restart gets a new id of its own.
            self._open[key] = f"{self._gateway}:{tag}:{alarm}:{ts_ms}"
        alarm_id = self._open[key]
        if event == "clear":
            del self._open[key]
        return alarm_id
