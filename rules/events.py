"""Alarm events leaving the rule engine (semantics: design/RULES.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["AlarmEvent", "AlarmKind", "Transition"]

AlarmKind = Literal["fault", "high", "low", "roc", "trend_high", "trend_low", "stuck"]
Transition = Literal["raise", "escalate", "deescalate", "clear", "return", "ack"]


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """One state change of one alarm of one tag.

    ``tag`` is the tag's index in the engine's tag table; ``value`` is the sample's value (None
    when not finite, or for ``ack``); ``extra`` holds clause-specific fields (``limit``,
    ``reason``, ``rate_per_min``, ``eta_s``).
    """

    ts_ms: int
    tag: int
    alarm: AlarmKind
    event: Transition
    level: int
    value: float | None
    extra: dict[str, float | str] = field(default_factory=dict)
