"""Rule engine benchmark (issue 4, item 5): every check on, through the public API.

Prints, for the machine it runs on:

1. Throughput: samples/s through ``RuleEngine.evaluate`` for 1,000 / 10,000 / 100,000 tags, in
   batches of ``--batch-ticks`` ticks (one sample per tag per tick, tick-major order as a poller
   delivers them), against the pure-Python twin of RULES.md (``tests/rules/naive.py``) in the
   same run. The twin is measured on an evenly spaced subset of the tags (``--twin-tags``) over
   the first ``--twin-ticks`` timed ticks and quoted per sample (tags are independent, so its
   cost per sample does not depend on the number of tags).
2. One tick (one new sample for each of 10,000 tags, one ``evaluate`` call, AlarmEvent objects
   included): p50/p95/p99/max over ``--latency-ticks`` ticks after the windows are full.
3. Start: fresh subprocesses with an empty (cold) and then the same (warm) ``NUMBA_CACHE_DIR``:
   process start → engine ready (``warm_up()`` returned), and ``warm_up()`` alone; baseline: a
   bare ``python -c pass`` in the same run.
4. RSS of a fresh process after importing ``rules`` (baseline) and after building the engine
   (and warming it up) for each size; VmHWM is the peak.

Workload (every check of RULES.md on every tag): high 80 / high_high 90 / low 20 / low_low 10,
deadband 1 and high_high_deadband 2, on-delay 2 s, off-delay 5 s, latch, range [0, 100], roc
limit 20/min over 60 s, trend over 60 s (60 samples at 1 Hz) with a 120 s horizon, stuck 30 s.
Signals: 1 Hz; a noisy level around 50 for most tags, 5 % swinging slowly across the limits
(high/low/trend/roc events), 1 % flat (stuck), 0.05 % bad-quality samples (fault).

Run: ``NUMBA_CACHE_DIR=.cache/numba .venv/bin/python benchmarks/bench_rules.py`` (about a
minute and a half on 2 cores). Not a test: the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # the twin lives in tests/rules/naive.py

WARM_IN_TICKS = 70  # fills the 60 s windows before anything is timed
RULE: dict[str, Any] = {
    "high": 80.0,
    "high_high": 90.0,
    "low": 20.0,
    "low_low": 10.0,
    "deadband": 1.0,
    "high_high_deadband": 2.0,
    "on_delay_s": 2.0,
    "off_delay_s": 5.0,
    "latch": True,
    "range": (0.0, 100.0),
    "roc_limit_per_min": 20.0,
    "roc_window_s": 60.0,
    "trend_window_s": 60.0,
    "trend_horizon_s": 120.0,
    "trend_min_points": 5,
    "stuck_s": 30.0,
    "stuck_band": 0.0,
}


# -- workload ---------------------------------------------------------------------------------


class Workload:
    """Deterministic 1 Hz signals for ``n`` tags; ``tick(a, b)`` gives ticks a..b-1 flattened."""

    def __init__(self, n: int, seed: int = 7) -> None:
        rng = np.random.default_rng(seed)
        self.n = n
        self.jitter = rng.integers(0, 1000, n).astype(np.int64)  # each tag's phase in the second
        self.base = 50.0 + rng.normal(0.0, 5.0, n)
        swing = rng.random(n) < 0.05
        self.amp = np.where(swing, rng.uniform(35.0, 55.0, n), rng.uniform(0.0, 3.0, n))
        self.period = rng.uniform(300.0, 900.0, n)
        self.phase = rng.uniform(0.0, 2 * np.pi, n)
        self.flat = (rng.random(n) < 0.01) & ~swing
        self.seed = seed
        self.tags = np.arange(n, dtype=np.int32)

    def ticks(self, a: int, b: int) -> tuple[np.ndarray, ...]:
        k = b - a
        rng = np.random.default_rng((self.seed, a, b))
        t = np.arange(a, b, dtype=np.float64)[:, None]
        val = self.base + self.amp * np.sin(2 * np.pi * t / self.period + self.phase)
        val += rng.normal(0.0, 0.4, (k, self.n))
        val = np.round(val, 2)
        val[:, self.flat] = np.round(self.base[self.flat], 1)
        qual = (rng.random((k, self.n)) < 0.0005).astype(np.uint8)
        ts = 1_700_000_000_000 + np.arange(a, b, dtype=np.int64)[:, None] * 1000 + self.jitter
        tag = np.broadcast_to(self.tags, (k, self.n))
        return (
            np.ascontiguousarray(tag).ravel(),
            ts.ravel(),
            val.ravel(),
            qual.ravel(),
        )


def build_engine(n: int) -> Any:
    from rules import RuleEngine
    from rules.config import RuleConfig

    names = [f"T{k:06d}" for k in range(n)]
    return RuleEngine(names, [RuleConfig(match="T*", **RULE)])


# -- measurements -----------------------------------------------------------------------------


def batches(w: Workload, start: int, ticks: int, per: int) -> list[tuple[np.ndarray, ...]]:
    return [w.ticks(a, min(a + per, start + ticks)) for a in range(start, start + ticks, per)]


def engine_rate(n: int, ticks: int, per: int, repeats: int) -> tuple[float, int]:
    """Best samples/s over ``repeats`` fresh engines; events emitted in the timed part."""
    w = Workload(n)
    warm = batches(w, 0, WARM_IN_TICKS, 10)
    timed = batches(w, WARM_IN_TICKS, ticks, per)
    best, events = 0.0, 0
    for _ in range(repeats):
        eng = build_engine(n)
        eng.warm_up()
        for b in warm:
            eng.evaluate(*b)
        t0 = time.perf_counter()
        count = sum(len(eng.evaluate(*b)) for b in timed)
        dt = time.perf_counter() - t0
        best, events = max(best, n * ticks / dt), count
    return best, events


def twin_rate(n: int, subset: int, ticks: int) -> tuple[float, int]:
    """Samples/s of the pure-Python twin on ``subset`` evenly spaced tags (same signals)."""
    from rules.config import RuleConfig
    from rules.params import resolve_rules
    from tests.rules.naive import NaiveEngine

    w = Workload(n)
    pick = np.linspace(0, n - 1, min(subset, n)).astype(np.int64)
    names = [f"T{k:06d}" for k in range(len(pick))]
    merged = resolve_rules([RuleConfig(match="T*", **RULE)], names)
    twin = NaiveEngine([dict(tp.values) if tp else {} for tp in merged])

    def feed(a: int, b: int) -> int:
        _, ts, val, qual = w.ticks(a, b)
        rows = [
            (j, int(ts[i]), float(val[i]), bool(qual[i] == 0))
            for tick in range(b - a)
            for j, i in enumerate(pick + tick * n)
        ]
        return sum(len(twin.sample(*row)) for row in rows)

    feed(0, WARM_IN_TICKS)
    t0 = time.perf_counter()
    count = feed(WARM_IN_TICKS, WARM_IN_TICKS + ticks)
    dt = time.perf_counter() - t0
    return len(pick) * ticks / dt, count


def tick_latency(n: int, ticks: int) -> dict[str, float]:
    w = Workload(n)
    eng = build_engine(n)
    eng.warm_up()
    for b in batches(w, 0, WARM_IN_TICKS, 10):
        eng.evaluate(*b)
    data = [w.ticks(a, a + 1) for a in range(WARM_IN_TICKS, WARM_IN_TICKS + ticks)]
    times = np.empty(ticks)
    events = 0
    for j, b in enumerate(data):
        t0 = time.perf_counter()
        events += len(eng.evaluate(*b))
        times[j] = time.perf_counter() - t0
    return {
        "p50": float(np.percentile(times, 50)),
        "p95": float(np.percentile(times, 95)),
        "p99": float(np.percentile(times, 99)),
        "max": float(times.max()),
        "events_per_tick": events / ticks,
    }


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child_start(n: int) -> None:
    """Run in a fresh process: timings (monotonic clock, comparable with the parent) and RSS."""
    t_import = time.monotonic()
    import rules  # noqa: F401

    rss_import = _status_kib("VmRSS")
    t_build = time.monotonic()
    eng = build_engine(n)
    t_warm = time.monotonic()
    eng.warm_up()
    t_ready = time.monotonic()
    out = {
        "import_s": t_build - t_import,
        "build_s": t_warm - t_build,
        "warm_up_s": t_ready - t_warm,
        "ready_mono": t_ready,
        "rss_import_kib": rss_import,
        "rss_engine_kib": _status_kib("VmRSS"),
        "hwm_kib": _status_kib("VmHWM"),
    }
    print(json.dumps(out))


def run_child(n: int, cache: str) -> dict[str, float]:
    env = {**os.environ, "NUMBA_CACHE_DIR": cache}
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, __file__, "--child-start", str(n)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    res: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    res["ready_s"] = res["ready_mono"] - t0
    return res


def bare_python() -> float:
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.monotonic() - t0


# -- report -----------------------------------------------------------------------------------


def machine() -> str:
    import numba

    model = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0))
    return (
        f"machine: {model}, {cores} cores usable ({os.cpu_count()} online); "
        f"Python {platform.python_version()}, numba {numba.__version__}, numpy {np.__version__}; "
        f"{platform.system()} {platform.release()}"
    )


def table(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[c]) for r in rows)) for c, h in enumerate(head)]
    lines = ["  ".join(h.rjust(wd) for h, wd in zip(head, widths, strict=True))]
    lines.append("  ".join("-" * wd for wd in widths))
    lines += ["  ".join(c.rjust(wd) for c, wd in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def _ms(s: float) -> str:
    return f"{s * 1000:.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")],
                    default=[1_000, 10_000, 100_000])  # fmt: skip
    ap.add_argument("--samples", type=int, default=4_000_000, help="timed samples per size")
    ap.add_argument("--batch-ticks", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--twin-tags", type=int, default=40)
    ap.add_argument("--twin-ticks", type=int, default=20)
    ap.add_argument("--latency-tags", type=int, default=10_000)
    ap.add_argument("--latency-ticks", type=int, default=1_000)
    ap.add_argument("--start-tags", type=int, default=10_000)
    ap.add_argument("--start-repeats", type=int, default=3)
    ap.add_argument("--child-start", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child_start is not None:
        child_start(args.child_start)
        return 0

    print(machine())
    print(f"NUMBA_CACHE_DIR={os.environ.get('NUMBA_CACHE_DIR', '(unset)')}")
    print()

    rows = []
    for n in args.sizes:
        ticks = max(args.batch_ticks, args.samples // n // args.batch_ticks * args.batch_ticks)
        rate, ev = engine_rate(n, ticks, args.batch_ticks, args.repeats)
        trate, tev = twin_rate(n, args.twin_tags, args.twin_ticks)
        rows.append([
            f"{n:,}", f"{ticks}", f"{n * args.batch_ticks:,}", f"{rate / 1e6:.1f} M",
            f"{ev:,}", f"{trate / 1e3:.2f} k", f"{min(n, args.twin_tags)}x{args.twin_ticks}",
            f"{rate / trate:,.0f}x",
        ])  # fmt: skip
    print(f"1. Throughput through RuleEngine.evaluate (every check on; best of {args.repeats}); "
          "baseline: the pure-Python twin on a tag subset, per sample")  # fmt: skip
    print(table(["tags", "ticks", "batch", "engine samples/s", "events", "twin samples/s",
                 "twin tags x ticks", "engine/twin"], rows))  # fmt: skip
    print()

    lat = tick_latency(args.latency_tags, args.latency_ticks)
    twin_tick = args.latency_tags / twin_rate(args.latency_tags, args.twin_tags, args.twin_ticks)[0]
    print(f"2. One tick: {args.latency_tags:,} tags, one sample each, one evaluate() call, over "
          f"{args.latency_ticks} ticks after a {WARM_IN_TICKS}-tick warm-in; "
          f"{lat['events_per_tick']:.1f} events/tick")  # fmt: skip
    print(table(
        ["p50 ms", "p95 ms", "p99 ms", "max ms", "samples/s at p50", "twin tick ms (scaled)",
         "twin/engine p50"],
        [[_ms(lat["p50"]), _ms(lat["p95"]), _ms(lat["p99"]), _ms(lat["max"]),
          f"{args.latency_tags / lat['p50'] / 1e6:.1f} M", _ms(twin_tick),
          f"{twin_tick / lat['p50']:,.0f}x"]],
    ))  # fmt: skip
    print()

    bare = min(bare_python() for _ in range(args.start_repeats))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-numba-") as cache:
        cold = run_child(args.start_tags, cache)
        warm = [run_child(args.start_tags, cache) for _ in range(args.start_repeats)]
    for label, res in [("cold", cold), ("warm", min(warm, key=lambda r: r["ready_s"]))]:
        rows.append([label, f"{res['ready_s']:.3f}", f"{res['import_s']:.3f}",
                     f"{res['build_s']:.3f}", f"{res['warm_up_s']:.3f}",
                     f"{res['ready_s'] / bare:.1f}x"])  # fmt: skip
    print(
        f"3. Start of a fresh process with {args.start_tags:,} tags (warm: best of "
        f"{args.start_repeats}); baseline: bare `python -c pass` = {bare:.3f} s"
    )
    print(table(["cache", "start→ready s", "import rules s", "build s", "warm_up() s",
                 "ready/bare"], rows))  # fmt: skip
    print()

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-numba-") as cache:
        run_child(args.sizes[0], cache)  # fill the cache so RSS excludes the compiler's peak
        for n in args.sizes:
            res = run_child(n, cache)
            rows.append([f"{n:,}", f"{res['rss_import_kib'] / 1024:.1f}",
                         f"{res['rss_engine_kib'] / 1024:.1f}",
                         f"{(res['rss_engine_kib'] - res['rss_import_kib']) / 1024:.1f}",
                         f"{res['hwm_kib'] / 1024:.1f}"])  # fmt: skip
    print("4. RSS of a fresh process (MiB, warm cache): after `import rules` (baseline), after "
          "building the engine and warm_up()")  # fmt: skip
    print(table(["tags", "after import", "after build", "engine delta", "VmHWM"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
