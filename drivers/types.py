"""Plain data that leaves the drivers package: quality codes and columnar sample batches.

Invariants of a :class:`SampleBatch`:
- all four arrays have the same length;
- ``value`` is NaN exactly when ``quality`` is not GOOD (a value that could not be read is never
  replaced by an old one);
- ``ts_ms`` is UTC epoch milliseconds taken when the read completed;
- ``exact`` maps a position in the batch to the exact integer of a GOOD int64/uint64 sample
  (``value`` holds the same number rounded to float64, which is what rules see); the uplink
  encodes it as a JSON integer.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

__all__ = ["Quality", "SampleBatch"]


class Quality(enum.IntEnum):
    """Per-sample quality code (uint8 on the wire and in arrays)."""

    GOOD = 0
    BAD_COMM = 1  # no answer / connection lost
    BAD_DEVICE = 2  # Modbus exception response
    BAD_RANGE = 3  # outside the measuring range or a fault current
    STALE = 4  # value not refreshed in time

    @property
    def wire_name(self) -> str:
        """Name used in the uplink contract (``bad_comm``...)."""
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class SampleBatch:
    """Columnar samples; ``tag`` indexes the agent's tag table."""

    tag: NDArray[np.int32]
    ts_ms: NDArray[np.int64]
    value: NDArray[np.float64]
    quality: NDArray[np.uint8]
    exact: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.tag)
        if not (len(self.ts_ms) == len(self.value) == len(self.quality) == n):
            raise ValueError("SampleBatch arrays must have equal lengths")

    def __len__(self) -> int:
        return len(self.tag)

    @staticmethod
    def empty() -> SampleBatch:
        return SampleBatch(
            tag=np.empty(0, np.int32),
            ts_ms=np.empty(0, np.int64),
            value=np.empty(0, np.float64),
            quality=np.empty(0, np.uint8),
        )

    @staticmethod
    def concat(batches: list[SampleBatch]) -> SampleBatch:
        if not batches:
            return SampleBatch.empty()
        exact: dict[int, int] = {}
        base = 0
        for b in batches:
            exact.update((base + k, v) for k, v in b.exact.items())
            base += len(b)
        return SampleBatch(
            tag=np.concatenate([b.tag for b in batches]).astype(np.int32, copy=False),
            ts_ms=np.concatenate([b.ts_ms for b in batches]).astype(np.int64, copy=False),
            value=np.concatenate([b.value for b in batches]).astype(np.float64, copy=False),
            quality=np.concatenate([b.quality for b in batches]).astype(np.uint8, copy=False),
            exact=exact,
        )
