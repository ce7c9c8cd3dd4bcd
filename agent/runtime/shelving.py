"""Shelved alarms (ISA-18.2): hidden from the board for a bounded time, never from the record.

A shelved alarm is still evaluated, recorded and sent upstream; its alarm records carry
``shelved: true`` (:class:`agent.runtime.alarms.AlarmRecorder` asks :meth:`Shelving.is_shelved`
when it encodes). A shelf always has an end no later than ``max_s`` after it was made and a
non-empty reason; :meth:`expire` returns the shelves whose end has passed (the caller records
the ``alarm_unshelved`` event). Event loop thread only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Shelf", "Shelving"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Shelf:
    tag: str
    alarm: str
    user: str
    reason: str
    since_ms: int
    until_ms: int


class Shelving:
    def __init__(self, *, max_s: float, clock_ms: Callable[[], int]) -> None:
        self.max_s = max_s
        self._clock_ms = clock_ms
        self._shelves: dict[tuple[str, str], Shelf] = {}
        self.on_change: Callable[[], None] | None = None  # a shelf started or ended

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def shelve(self, *, tag: str, alarm: str, user: str, reason: str, duration_s: float) -> Shelf:
        """Shelve one alarm; raises ValueError for a missing reason or a duration out of
        (0, max_s]. Shelving a shelved alarm replaces its shelf."""
        if not reason.strip():
            raise ValueError("a reason is required to shelve an alarm")
        if not 0 < duration_s <= self.max_s:
            raise ValueError(f"shelve for more than 0 and at most {self.max_s:g} s")
        now = self._clock_ms()
        shelf = Shelf(
            tag=tag,
            alarm=alarm,
            user=user,
            reason=reason.strip(),
            since_ms=now,
            until_ms=now + int(duration_s * 1000),
        )
        self._shelves[(tag, alarm)] = shelf
        self._changed()
        return shelf

    def unshelve(self, tag: str, alarm: str) -> Shelf | None:
        shelf = self._shelves.pop((tag, alarm), None)
        if shelf is not None:
            self._changed()
        return shelf

    def is_shelved(self, tag: str, alarm: str) -> bool:
        shelf = self._shelves.get((tag, alarm))
        return shelf is not None and shelf.until_ms > self._clock_ms()

    def expire(self) -> list[Shelf]:
        now = self._clock_ms()
        done = [s for s in self._shelves.values() if s.until_ms <= now]
        for s in done:
            del self._shelves[(s.tag, s.alarm)]
        if done:
            self._changed()
        return done

    def shelves(self) -> list[Shelf]:
        return sorted(self._shelves.values(), key=lambda s: s.until_ms)
