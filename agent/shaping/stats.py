"""Statistics windows over every polled sample of the tags whose policy is ``stats``.

:class:`StatsWindows` keeps per-tag accumulators in arrays and runs the numba kernels of
:mod:`agent.shaping.stats_kernel` on each poll's columns (no Python per sample); closed windows
come back as :class:`agent.codec_v2.StatRow` lists, one per window length, ready for
:func:`agent.codec_v2.stats_body`. Windows are aligned to the wall clock (see the kernel
module). A row is produced when a tag's next sample falls in a later window, or by
:meth:`StatsWindows.due` once ``now`` passed the window's end; :meth:`StatsWindows.flush` (at
shutdown) closes what is open, so a partial window is sent rather than lost.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from agent.codec_v2 import StatRow
from rules.native import Kernels, KernelSet, c_array, kernels

__all__ = ["STATS_KERNELS", "StatsWindows", "stats_kernels", "warm_up"]

_C2 = "i8[:, ::1], f8[:, ::1], i4[::1], i8[:, ::1], f8[:, ::1]"  # st_i, st_f, out_t, out_i, out_f
STATS_KERNELS = KernelSet(
    prefix="safeedge_stats",
    jit_module="agent.shaping.stats_kernel",
    sources=("agent.shaping.stats_kernel",),
    exports=(
        ("accumulate", f"i8(i4[::1], i8[::1], f8[::1], u1[::1], i8[::1], {_C2})"),
        ("close_due", f"i8(i8, i8[::1], {_C2})"),
    ),
)


def stats_kernels() -> Kernels:
    """The statistics kernels as loaded: native when built, else numba's JIT
    (:func:`rules.native.kernels`)."""
    return kernels(STATS_KERNELS)


def _opt(x: float) -> float | None:
    return None if x != x else x  # NaN: no good sample


class StatsWindows:
    """Accumulators for ``names`` (tag index order); ``window_ms[i]`` > 0 summarises tag ``i``.

    Not thread-safe (the event loop thread only). Rows are grouped by window length.
    """

    def __init__(self, names: Sequence[str], window_ms: NDArray[np.int64]) -> None:
        if len(names) != len(window_ms):
            raise ValueError("one window per tag name is required")
        if np.any(window_ms < 0):
            raise ValueError("windows must be >= 0 ms")
        self._k = stats_kernels()
        self._names = tuple(names)
        self._window = np.ascontiguousarray(window_ms, dtype=np.int64)
        n = len(names)
        self._st_i = np.zeros((n, 3), dtype=np.int64)
        self._st_f = np.zeros((n, 4), dtype=np.float64)

    @property
    def active(self) -> NDArray[np.bool_]:
        """Which tag indices are summarised."""
        return self._window > 0

    def add(
        self,
        tag: NDArray[np.int32],
        ts_ms: NDArray[np.int64],
        value: NDArray[np.float64],
        quality: NDArray[np.uint8],
    ) -> dict[int, list[StatRow]]:
        """Add a poll's samples (any tags; others are ignored); closed windows by length."""
        n = len(tag)
        if n == 0:
            return {}
        out_t = np.empty(n, dtype=np.int32)
        out_i = np.empty((n, 3), dtype=np.int64)
        out_f = np.empty((n, 4), dtype=np.float64)
        k = self._k.accumulate(
            c_array(tag, np.int32),
            c_array(ts_ms, np.int64),
            c_array(value, np.float64),
            c_array(quality, np.uint8),
            self._window,
            self._st_i,
            self._st_f,
            out_t,
            out_i,
            out_f,
        )
        return self._rows(int(k), out_t, out_i, out_f)

    def due(self, now_ms: int) -> dict[int, list[StatRow]]:
        """Close every window that ended at or before ``now_ms``."""
        n = len(self._names)
        out_t = np.empty(n, dtype=np.int32)
        out_i = np.empty((n, 3), dtype=np.int64)
        out_f = np.empty((n, 4), dtype=np.float64)
        k = self._k.close_due(
            np.int64(now_ms), self._window, self._st_i, self._st_f, out_t, out_i, out_f
        )
        return self._rows(int(k), out_t, out_i, out_f)

    def flush(self) -> dict[int, list[StatRow]]:
        """Close every open window, ended or not (shutdown)."""
        return self.due(2**62)

    def _rows(
        self,
        k: int,
        out_t: NDArray[np.int32],
        out_i: NDArray[np.int64],
        out_f: NDArray[np.float64],
    ) -> dict[int, list[StatRow]]:
        by_window: dict[int, list[StatRow]] = {}
        # One Python row per tag and closed window (once a minute per tag), not per sample.
        for t, (start, count, bad), f in zip(
            out_t[:k].tolist(), out_i[:k].tolist(), out_f[:k].tolist(), strict=True
        ):
            mn, mx, mean, last = (_opt(x) for x in f)
            row = StatRow(self._names[t], start, count, mn, mx, mean, last, bad)
            by_window.setdefault(int(self._window[t]), []).append(row)
        return by_window


def warm_up() -> None:
    """Run every statistics kernel once on a throwaway window, so numba compiles them (or loads
    them from its cache) now rather than at the first poll, on the event loop (where it took
    3.5 s on a loaded 2-core box and made the first Modbus connect time out). No I/O but
    numba's cache; safe in a worker thread (touches no shared state)."""
    w = StatsWindows(["warm"], np.array([1000], dtype=np.int64))
    one = (np.zeros(1, np.int32), np.ones(1, np.int64), np.zeros(1), np.zeros(1, np.uint8))
    w.add(*one)
    w.due(10_000)
