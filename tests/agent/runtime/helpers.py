"""Reading a real store back and building batches, for the runtime part tests."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from agent.runtime.sink import RecordSink
from buffer import Store
from buffer.record import Stream
from drivers import SampleBatch


def batch(rows: list[tuple[int, int, float, int]]) -> SampleBatch:
    return SampleBatch(
        tag=np.array([r[0] for r in rows], dtype=np.int32),
        ts_ms=np.array([r[1] for r in rows], dtype=np.int64),
        value=np.array([r[2] for r in rows], dtype=np.float64),
        quality=np.array([r[3] for r in rows], dtype=np.uint8),
    )


def bodies(store: Store, stream: Stream) -> list[Any]:
    last = store.stats().streams[stream].last_seq
    return [json.loads(r.payload) for r in store.resend(stream, 1, last)] if last else []


class OrderedSink(RecordSink):
    """The real sink (appends to the real store), also noting the order of streams appended:
    the store numbers each stream on its own, so cross-stream order is not in it."""

    order: list[Stream]

    def append(
        self, stream: Stream, payloads: list[bytes], *, state: Mapping[str, bytes] | None = None
    ) -> None:
        if not hasattr(self, "order"):
            self.order = []
        self.order.append(stream)
        super().append(stream, payloads, state=state)
