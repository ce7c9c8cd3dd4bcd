"""Incident recorder memory (issue 16): ``--devices`` × ``--tags`` tags at 1 Hz fed to an
:class:`IncidentRecorder` with the default config (10-minute pre-trigger window) for
``--seconds`` of simulated time (default 10 × 1,000 tags, 15 min), each run in a fresh process:
peak RSS (VmHWM) with the recorder beside the same feed loop without it (the baseline, same
run), and the ring's arithmetic (points × bytes/point, agent/review/ring.py).

Run: ``.venv/bin/python benchmarks/bench_recorder_memory.py`` (about a minute).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from agent.review.config import RecorderConfig  # noqa: E402
from agent.review.recorder import IncidentRecorder  # noqa: E402

__all__ = ["bench_memory"]

T0 = 1_780_000_000_000


def _mem_child(devices: int, tags: int, seconds: int, with_recorder: bool) -> None:
    """Child process of :func:`bench_memory`: prints one JSON line."""
    n = devices * tags
    names = [f"D{d:02d}T{i:04d}" for d in range(devices) for i in range(tags)]
    rec = None
    if with_recorder:
        rec = IncidentRecorder(
            config=RecorderConfig(),
            tag_names=names,
            devices=[f"plc{i // tags:02d}" for i in range(n)],
            poll_s=[1.0] * n,
        )
    rng = np.random.default_rng(5)
    q = np.zeros(tags, np.uint8)
    t = time.perf_counter()
    for s in range(seconds):
        for d in range(devices):
            tag = np.arange(d * tags, (d + 1) * tags, dtype=np.int32)
            ts = np.full(tags, T0 + s * 1000 + 7 * d, np.int64)
            v = rng.normal(50, 5, tags)
            if rec is not None:
                rec.feed(tag, ts, v, q, [])
    feed_s = time.perf_counter() - t
    with open("/proc/self/status", encoding="ascii") as f:
        hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    doc = {"hwm_mb": hwm, "feed_s": feed_s}
    if rec is not None:
        doc |= {
            "points": rec.ring_points,
            "capacity": rec.plan.capacity,
            "bpp": rec.plan.bytes_per_point,
            "dropped": rec.ring_dropped,
            "warning": rec.plan.warning,
        }
    print(json.dumps(doc))


def bench_memory(*, devices: int, tags: int, seconds: int) -> None:
    print(f"\nRecorder memory: {devices} × {tags} tags at 1 Hz, {seconds} s simulated")

    def child(with_recorder: bool) -> dict[str, Any]:
        argv = [sys.executable, __file__, "--child", str(int(with_recorder))]
        argv += ["--devices", str(devices), "--tags", str(tags), "--seconds", str(seconds)]
        out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
        return dict(json.loads(out.splitlines()[-1]))

    base, rec = child(False), child(True)
    ring_mb = rec["capacity"] * rec["bpp"] / 2**20
    print(f"{'':<44}{'peak RSS MiB':>14}")
    print(f"{'baseline: the same feed loop, no recorder':<44}{base['hwm_mb']:>14.1f}")
    print(f"{'with the recorder (default config)':<44}{rec['hwm_mb']:>14.1f}")
    print(f"{'recorder cost (difference)':<44}{rec['hwm_mb'] - base['hwm_mb']:>14.1f}")
    print(
        f"{'ring arithmetic':<44}{ring_mb:>14.1f}  = {rec['capacity']:,} points × "
        f"{rec['bpp']} B; held at the end {rec['points']:,}, dropped {rec['dropped']:,}"
    )
    print(f"feed: {1000 * rec['feed_s'] / seconds:.2f} ms per simulated second of {devices} polls")
    if rec["warning"]:
        print(f"warning: {rec['warning']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--devices", type=int, default=10)
    ap.add_argument("--tags", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=900)
    ap.add_argument("--child", type=int, choices=(0, 1), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        _mem_child(args.devices, args.tags, args.seconds, bool(args.child))
    else:
        bench_memory(devices=args.devices, tags=args.tags, seconds=args.seconds)


if __name__ == "__main__":
    main()
