"""Per-poll cost of the Python glue between a poll's SampleBatch and the store (issue 9, item 4).

For one poll of ``N`` tags (500 and 1,000 by default) it times, per poll:

- ``rbe``: report-by-exception (deadband 0.5, integrity 60 s);
- ``shape``: turning the kept samples into telemetry records (points, batching, JSON bodies);
- ``glue``: both, plus device-health tracking (the whole path the runtime's ingest runs after
  the rules kernel; the store append is excluded: it is the same bytes either way and
  benchmarks/bench_buffer.py measures it);
- ``all``: ``shape`` without report-by-exception, every sample becoming a point (the
  default config).

OLD is today's implementation before the change (agent/pipeline.py ``_append_telemetry`` and
agent/telemetry.py at 67c81bc), kept as a verbatim-behaviour copy in this file, clearly
labelled below, so the baseline is measured in the same run on the same batches. NEW is the
code in agent/telemetry.py and agent/codec.py (columns → rows → bodies). Every poll, both
paths' bodies are compared byte for byte; a difference aborts the run.

Workload: values random-walk around 50; each poll 30 % of the tags move by more than the
deadband, 1 % of samples are ``bad_comm`` (NaN), ts advances 1 s; ``telemetry_batch`` 200 and
``telemetry_max_bytes`` 65536 (the defaults), linger 0. The median over ``--polls`` polls is
reported after ``--warm`` untimed polls.

Run: ``.venv/bin/python benchmarks/bench_glue.py`` (about 20 s). Not a test: the numbers
depend on the machine.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

import msgspec
import numpy as np
from numpy.typing import NDArray

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agent.codec import TelemetryEncoder  # noqa: E402
from agent.telemetry import ExceptionFilter, TelemetryBatcher  # noqa: E402
from drivers import Quality  # noqa: E402

QUALITY_NAMES: Final = {int(q): q.wire_name for q in Quality}

# ==== OLD: the baseline, a copy of the implementation before issue 9 (do not "improve") =====

_old_encoder: Final = msgspec.json.Encoder()
_OLD_OVERHEAD: Final = len(b'{"points":[]}')
OldPoint = tuple[str, int, float | None, str | None]


def _old_finite(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return value


def old_telemetry_body(points: Sequence[OldPoint]) -> bytes:
    out: list[list[object]] = []
    for tag, ts, value, quality in points:
        row: list[object] = [tag, ts, _old_finite(value)]
        if quality is not None and quality != "good":
            row.append(quality)
        out.append(row)
    return _old_encoder.encode({"points": out})


class OldExceptionFilter:
    def __init__(self, deadband: NDArray[np.float64], integrity_ms: int) -> None:
        n = len(deadband)
        self._deadband = deadband.astype(np.float64, copy=True)
        self._integrity = integrity_ms
        self._value = np.full(n, np.nan)
        self._ts = np.zeros(n, dtype=np.int64)
        self._quality = np.zeros(n, dtype=np.int16)
        self._seen = np.zeros(n, dtype=bool)

    def select(
        self,
        tag: NDArray[np.int32],
        ts_ms: NDArray[np.int64],
        value: NDArray[np.float64],
        quality: NDArray[np.uint8],
    ) -> NDArray[np.bool_]:
        out = np.zeros(len(tag), dtype=bool)
        for i in range(len(tag)):
            t = int(tag[i])
            q = int(quality[i])
            ts = int(ts_ms[i])
            v = float(value[i])
            report = (
                not self._seen[t]
                or q != self._quality[t]
                or ts - self._ts[t] >= self._integrity
                or (q == 0 and not abs(v - self._value[t]) <= self._deadband[t])
            )
            if report:
                out[i] = True
                self._seen[t] = True
                self._quality[t] = q
                self._ts[t] = ts
                self._value[t] = v
        return out


class OldTelemetryBatcher:
    def __init__(self, *, max_points: int, max_bytes: int, linger_ms: int) -> None:
        self.max_points = max_points
        self.max_bytes = max_bytes
        self.linger_ms = linger_ms
        self._points: list[OldPoint] = []
        self._bytes = _OLD_OVERHEAD

    def add(self, points: Sequence[OldPoint], now_ms: int) -> list[bytes]:
        out: list[bytes] = []
        for point in points:
            size = len(old_telemetry_body([point])) - _OLD_OVERHEAD + 1
            if self._points and (
                len(self._points) >= self.max_points or self._bytes + size > self.max_bytes
            ):
                out.append(self._close())
            self._points.append(point)
            self._bytes += size
        if self.linger_ms == 0 and self._points:
            out.append(self._close())
        return out

    def _close(self) -> bytes:
        body = old_telemetry_body(self._points)
        self._points = []
        self._bytes = _OLD_OVERHEAD
        return body


def old_points(
    names: Sequence[str],
    tag: NDArray[np.int32],
    ts: NDArray[np.int64],
    value: NDArray[np.float64],
    quality: NDArray[np.uint8],
) -> list[OldPoint]:
    """agent/pipeline.py ``_append_telemetry`` before issue 9: one tuple per point."""
    return [
        (names[t], s, v if not math.isnan(v) else None, QUALITY_NAMES[q] if q else None)
        for t, s, v, q in zip(
            tag.tolist(), ts.tolist(), value.tolist(), quality.tolist(), strict=True
        )
    ]


# ==== end of OLD ==============================================================================

Batch = tuple[NDArray[np.int32], NDArray[np.int64], NDArray[np.float64], NDArray[np.uint8]]


def workload(n: int, polls: int, seed: int = 9) -> list[Batch]:
    rng = np.random.default_rng(seed)
    tag = np.arange(n, dtype=np.int32)
    level = np.full(n, 50.0)
    out: list[Batch] = []
    for p in range(polls):
        move = rng.random(n) < 0.3
        level = level + np.where(move, rng.choice([-1.0, 1.0], n) * rng.uniform(0.6, 2, n), 0)
        value = level + rng.uniform(-0.1, 0.1, n)
        quality = np.where(rng.random(n) < 0.01, 1, 0).astype(np.uint8)
        value[quality != 0] = np.nan
        ts = np.full(n, 1_700_000_000_000 + p * 1000, dtype=np.int64)
        out.append((tag, ts, value, quality))
    return out


def track_device(online: dict[str, bool], name: str, now: bool) -> None:
    """Device health as ingest does it (the same code on both paths)."""
    was = online.get(name)
    online[name] = now
    if was is not None and was != now:
        raise AssertionError("the benchmark's device never changes state")


def measure(n: int, polls: int, warm: int) -> dict[str, tuple[float, float]]:
    """Median ms per poll per stage: {stage: (old, new)}."""
    names = [f"LT-{i:04d}" for i in range(n)]
    bands = np.full(n, 0.5)
    limits = {"max_points": 200, "max_bytes": 65536, "linger_ms": 0}
    old_rbe, new_rbe = OldExceptionFilter(bands, 60_000), ExceptionFilter(bands, 60_000)
    old_b, new_b = OldTelemetryBatcher(**limits), TelemetryBatcher(**limits)
    enc = TelemetryEncoder(names, {q: w for q, w in QUALITY_NAMES.items() if q})
    online: dict[str, bool] = {}
    times: dict[str, tuple[list[float], list[float]]] = {
        k: ([], []) for k in ("rbe", "shape", "glue", "all")
    }
    clock: Callable[[], float] = time.perf_counter
    for i, (tag, ts, value, quality) in enumerate(workload(n, warm + polls)):
        t0 = clock()
        track_device(online, "plc", True)
        keep = old_rbe.select(tag, ts, value, quality)
        t1 = clock()
        old_bodies = old_b.add(
            old_points(names, tag[keep], ts[keep], value[keep], quality[keep]), 0
        )
        t2 = clock()
        track_device(online, "plc", True)
        k2 = new_rbe.select(tag, ts, value, quality)
        t3 = clock()
        if not k2.all():
            cols = tag[k2], ts[k2], value[k2], quality[k2]
        else:
            cols = tag, ts, value, quality
        new_bodies = new_b.add_rows(enc.rows(*cols), 0)
        t4 = clock()
        t5 = clock()  # without report-by-exception: every sample becomes a point
        old_all = old_b.add(old_points(names, tag, ts, value, quality), 0)
        t6 = clock()
        new_all = new_b.add_rows(enc.rows(tag, ts, value, quality), 0)
        t7 = clock()
        if old_bodies != new_bodies or not np.array_equal(keep, k2) or old_all != new_all:
            raise SystemExit(f"poll {i}: OLD and NEW disagree (bodies or kept samples)")
        if i >= warm:
            for stage, old_s, new_s in (
                ("rbe", t1 - t0, t3 - t2),
                ("shape", t2 - t1, t4 - t3),
                ("glue", t2 - t0, t4 - t2),
                ("all", t6 - t5, t7 - t6),
            ):
                times[stage][0].append(old_s * 1000)
                times[stage][1].append(new_s * 1000)
    return {k: (statistics.median(o), statistics.median(w)) for k, (o, w) in times.items()}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="500,1000", help="tags per poll, comma-separated")
    ap.add_argument("--polls", type=int, default=300, help="timed polls per size")
    ap.add_argument("--warm", type=int, default=20, help="untimed polls first")
    args = ap.parse_args(argv)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus; "
        f"Python {platform.python_version()}; numpy {np.__version__}; msgspec {msgspec.__version__}"
    )
    print(f"median ms per poll over {args.polls} polls (bodies checked identical every poll)")
    print(f"{'tags':>6} {'stage':<7} {'OLD ms':>8} {'NEW ms':>8} {'OLD/NEW':>8}")
    for size in (int(s) for s in args.sizes.split(",")):
        for stage, (old, new) in measure(size, args.polls, args.warm).items():
            print(f"{size:>6} {stage:<7} {old:>8.3f} {new:>8.3f} {old / new:>7.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
