"""The arrays of one Modbus poll under construction (sans-I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from drivers.blockcodec import PollDecoder
from drivers.planner import PlannedPoint
from drivers.types import Quality

__all__ = ["ISOLATED", "PollBuffer"]

ISOLATED = np.uint8(255)  # request status: its tags were read by bisection and are already set


@dataclass(frozen=True, slots=True)
class PollBuffer:
    """By tag position: value, quality, time, exact integers; per request of the plan: its
    reply (copied into the decoder's buffers), status (a Quality, or ISOLATED) and time."""

    value: np.ndarray[Any, np.dtype[np.float64]]
    quality: np.ndarray[Any, np.dtype[np.uint8]]
    ts: np.ndarray[Any, np.dtype[np.int64]]
    registers: np.ndarray[Any, np.dtype[np.uint16]]
    bits: np.ndarray[Any, np.dtype[np.bool_]]
    status: np.ndarray[Any, np.dtype[np.uint8]]
    done_ms: np.ndarray[Any, np.dtype[np.int64]]
    exact: dict[int, int] = field(default_factory=dict)

    @staticmethod
    def start(tags: int, decoder: PollDecoder, requests: int) -> PollBuffer:
        registers, bits = decoder.new_buffers()
        return PollBuffer(
            value=np.full(tags, np.nan, dtype=np.float64),
            quality=np.full(tags, Quality.BAD_COMM, dtype=np.uint8),
            ts=np.zeros(tags, dtype=np.int64),
            registers=registers,
            bits=bits,
            status=np.full(requests, Quality.BAD_COMM, dtype=np.uint8),
            done_ms=np.zeros(requests, dtype=np.int64),
        )

    def settle(self, decoder: PollDecoder) -> None:
        """Decode every answered request at once; BAD_DEVICE for refused ones; a request that
        got a bad reply keeps BAD_COMM with the time it failed."""
        status = self.status[decoder.point_request]
        ok = status == Quality.GOOD
        value, quality = decoder.decode(self.registers, self.bits)
        tags = decoder.point_tag[ok]
        self.value[tags], self.quality[tags] = value[ok], quality[ok]
        for slot, integer in decoder.exact(self.registers):
            if ok[slot] and quality[slot] == Quality.GOOD:
                self.exact[int(decoder.point_tag[slot])] = integer
        refused = status == Quality.BAD_DEVICE
        self.quality[decoder.point_tag[refused]] = Quality.BAD_DEVICE
        done = (status != ISOLATED) & (self.done_ms[decoder.point_request] > 0)
        self.ts[decoder.point_tag[done]] = self.done_ms[decoder.point_request[done]]

    def bad(self, points: Sequence[PlannedPoint], now: int, quality: Quality) -> None:
        for p in points:
            self.value[p.tag], self.quality[p.tag], self.ts[p.tag] = np.nan, quality, now
