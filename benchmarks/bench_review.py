"""Review benchmark (issue 16): ``review alarms`` over 30 days × 1,000 tags and ``review tune``
with 9 candidate sets over 30 days of one tag at 1 Hz.

Prints, for the machine it runs on:

1. Alarms: a generated alarm history (tests/agent/review/histories.py: every kind, chattering
   bad actors, stale and standing alarms, acks, device_lost events) written with the agent's
   codec into a real buffer; then, timed: reading it back (decrypt + decode,
   ``History.alarms``), the vectorised KPIs (``alarm_kpis``), the HTML report with its plots;
   baseline in the same run: the naive pure-Python twin (tests/agent/review/naive.py) over the
   same decoded events, measured on the first ``--twin-days`` days and quoted per event.
   Target: read + KPIs + HTML ≤ 30 s.
2. Tune: one tag at 1 Hz for ``--tune-days`` days (a noisy level crossing high/high_high,
   a chattering spell), telemetry records of 200 points as with ``telemetry_linger_ms``;
   timed: loading its points (``History.points`` with the incident windows, as the command
   does), the replay of the current set + 9 candidates (``tune``), and the whole command
   ``safeedge review tune`` as a fresh process; baseline: one ``RuleEngine.evaluate`` pass of
   the same samples (the engine's floor). Target: the whole command ≤ 5 s.
3. Recorder: the incident recorder's cost per polled batch (1,000 tags, 1 Hz, 10-minute ring)
   idle and with an incident open, beside ``RuleEngine.evaluate`` of the same batch; and the
   one-off cost of opening an incident (sealing the pre-trigger window is the caller's).
4. Recorder memory: benchmarks/bench_recorder_memory.py (``--mem-*`` sizes; ``--only memory``).

Run: ``NUMBA_CACHE_DIR=.cache/numba .venv/bin/python benchmarks/bench_review.py [--only
alarms|tune|recorder|memory]`` (a few minutes on 2 cores, most of it writing the history).
Not a test: the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # the history generator and the twin live under tests/

from agent.codec import telemetry_body  # noqa: E402
from agent.review.alarms import alarm_report_html  # noqa: E402
from agent.review.config import RecorderConfig  # noqa: E402
from agent.review.history import History  # noqa: E402
from agent.review.kpi import alarm_kpis  # noqa: E402
from agent.review.recorder import IncidentRecorder  # noqa: E402
from agent.review.text import SiteTime  # noqa: E402
from agent.review.tune import candidate_grid, tune  # noqa: E402
from benchmarks.bench_recorder_memory import bench_memory  # noqa: E402
from buffer import Store, StoreReader, Stream  # noqa: E402
from rules import RuleEngine  # noqa: E402
from rules.config import RuleConfig  # noqa: E402
from rules.events import AlarmEvent  # noqa: E402
from tests.agent.review.histories import DAY, GW, T0, random_alarm_history  # noqa: E402
from tests.agent.review.naive import naive_kpis  # noqa: E402

_SAME = (
    "alarms",
    "flood_periods",
    "peak",
    "chattering",
    "chattering_raises",
    "fleeting",
    "stale",
    "standing",
    "acked",
    "cleared",
    "counts_10min",
    "standing_list",
    "faults_by_device",
)
RULE = {"high": 25.0, "high_high": 50.0, "deadband": 0.5, "on_delay_s": 0.0}


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    py = platform.python_version()
    return f"machine: {cpu}, {os.cpu_count()} cores, Python {py}, {platform.system()}"


def _paths(root: Path) -> dict[str, Path]:
    return {"path": root / "buffer.db", "key_file": root / "buffer.key"}


def bench_alarms(
    root: Path, *, tags: int, days: float, twin_days: float, per_tag_day: float
) -> None:
    print(f"\n1. Alarms: {tags} tags × {days:g} days")
    t = time.perf_counter()
    with Store.open(**_paths(root), gateway_id=GW) as store:
        device_of = random_alarm_history(
            store, tags=tags, days=days, seed=16, per_tag_day=per_tag_day
        )
    gen_s = time.perf_counter() - t
    from_ms, to_ms = T0, T0 + int(days * DAY)
    site = SiteTime("Asia/Shanghai")
    t = time.perf_counter()
    with History.open(**_paths(root), gateway_id=GW) as h:
        log = h.alarms(to_ms=to_ms)
        events = h.events(from_ms=from_ms, to_ms=to_ms)
    read_s = time.perf_counter() - t
    t = time.perf_counter()
    k = alarm_kpis(
        log, from_ms=from_ms, to_ms=to_ms, fleeting_ms=10_000, device_of=device_of, events=events
    )
    kpi_s = time.perf_counter() - t
    t = time.perf_counter()
    page = alarm_report_html(k, lang="zh", site=site, gateway=GW)
    html_s = time.perf_counter() - t

    with StoreReader.open(**_paths(root), gateway_id=GW) as r:
        decoded = [json.loads(rec.payload or b"") for rec in r.records(stream=Stream.ALARM)]
    twin_to = from_ms + int(twin_days * DAY)
    sub = [d for d in decoded if d["ts_ms"] < twin_to]
    t = time.perf_counter()
    twin = naive_kpis(
        sub, from_ms=from_ms, to_ms=twin_to, fleeting_ms=10_000, device_of=device_of, events=events
    )
    twin_s = time.perf_counter() - t
    k_sub = alarm_kpis(
        log, from_ms=from_ms, to_ms=twin_to, fleeting_ms=10_000, device_of=device_of, events=events
    )
    t = time.perf_counter()
    alarm_kpis(
        log, from_ms=from_ms, to_ms=twin_to, fleeting_ms=10_000, device_of=device_of, events=events
    )
    kpi_sub_s = time.perf_counter() - t
    n = len(log)
    total = read_s + kpi_s + html_s
    print(
        f"history: {n:,} alarm events ({k.alarms:,} raises, {k.chattering} chattering alarms, "
        f"{k.stale} stale, {k.standing} standing) written in {gen_s:.1f} s (setup, not timed)"
    )
    print(f"{'step':<44}{'seconds':>10}{'per event':>14}")
    for label, s, count in (
        ("read back (decrypt + decode, History.alarms)", read_s, n),
        ("KPIs (alarm_kpis, numpy)", kpi_s, n),
        ("HTML report with plots", html_s, n),
        (f"twin KPIs (pure Python), first {twin_days:g} days", twin_s, len(sub)),
        (f"numpy KPIs, same first {twin_days:g} days", kpi_sub_s, len(sub)),
    ):
        print(f"{label:<44}{s:>10.3f}{1e6 * s / max(count, 1):>11.2f} µs")
    ratio = twin_s / max(kpi_sub_s, 1e-9)
    print(
        f"total read + KPIs + HTML: {total:.2f} s "
        f"(target ≤ 30 s: {'met' if total <= 30 else 'NOT met'}); "
        f"numpy KPIs are {ratio:.0f}× the twin; HTML {len(page) / 1e6:.2f} MB; "
        f"twin figures equal: {all(getattr(k_sub, f) == twin[f] for f in _SAME)}"
    )


def _signal(days: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = int(days * 86_400)
    secs = np.arange(n, dtype=np.float64)
    base = 10 + 8 * np.sin(secs / 3600 * 2 * math.pi / 7)
    spikes = np.zeros(n)
    for start in rng.integers(0, n - 2000, size=int(days * 3)):  # ~3 excursions a day
        width = int(rng.integers(120, 1200))
        height = float(rng.uniform(18, 50))
        ramp = np.minimum(np.arange(2 * width), 2 * width - np.arange(2 * width)) / width
        spikes[start : start + 2 * width] = np.maximum(
            spikes[start : start + 2 * width], height * ramp
        )
    noise = rng.normal(0, 0.6, n)
    return T0 + (secs * 1000).astype(np.int64), np.round(base + spikes + noise, 2)


def bench_tune(root: Path, *, days: float) -> None:
    tag = "GT-102"
    print(f"\n2. Tune: one tag at 1 Hz × {days:g} days, 9 candidate sets (+ the current one)")
    ts, value = _signal(days, seed=16)
    t = time.perf_counter()
    with Store.open(**_paths(root), gateway_id=GW) as store:
        for i in range(0, ts.shape[0], 200 * 500):
            bodies = [
                telemetry_body(
                    [
                        (tag, int(a), float(b), None)
                        for a, b in zip(
                            ts[j : j + 200].tolist(), value[j : j + 200].tolist(), strict=True
                        )
                    ]
                )
                for j in range(i, min(i + 200 * 500, ts.shape[0]), 200)
            ]
            store.append(
                Stream.TELEMETRY, bodies, created_ms=int(ts[min(i + 200 * 500, ts.shape[0]) - 1])
            )
    gen_s = time.perf_counter() - t
    end_ms = T0 + int(days * DAY) + 1000
    t = time.perf_counter()
    with History.open(**_paths(root), gateway_id=GW) as h:  # as `review tune` loads it
        pts = h.points(tags=[tag], from_ms=T0, to_ms=end_ms, with_incidents=True)
    load_s = time.perf_counter() - t
    command_s = _tune_command(root, tag, T0, end_ms)
    pts_ts, pts_v, pts_q = pts.of(tag)
    rules = [RuleConfig(tags=(tag,), **RULE)]
    grid = candidate_grid([("deadband", [0.5, 1.0, 2.0]), ("on_delay_s", [0.0, 5.0, 10.0])])
    tune(
        tag=tag,
        rules=rules,
        ts=pts_ts[:1000],
        value=pts_v[:1000],
        quality=pts_q[:1000],
        acks=np.empty(0, np.int64),
        grid=grid[:1],
    )  # compile / load kernels outside the timing
    t = time.perf_counter()
    result = tune(
        tag=tag,
        rules=rules,
        ts=pts_ts,
        value=pts_v,
        quality=pts_q,
        acks=np.empty(0, np.int64),
        grid=grid,
    )
    tune_s = time.perf_counter() - t
    engine = RuleEngine([tag], rules)
    zeros = np.zeros(pts_ts.shape[0], np.int32)
    t = time.perf_counter()
    engine.evaluate(zeros, pts_ts, pts_v, pts_q)
    floor_s = time.perf_counter() - t
    print(
        f"history: {pts_ts.shape[0]:,} samples in {math.ceil(pts_ts.shape[0] / 200):,} records, "
        "written in "
        f"{gen_s:.1f} s (setup); crossings {result.crossings}"
    )
    print(f"{'step':<52}{'seconds':>10}")
    print(f"{'load the points (History.points)':<52}{load_s:>10.3f}")
    print(f"{'tune: current + 9 candidates (events, cost, chatter)':<52}{tune_s:>10.3f}")
    print(f"{'baseline: one RuleEngine.evaluate pass':<52}{floor_s:>10.3f}")
    print(f"{'the whole command: safeedge review tune (a process)':<52}{command_s:>10.3f}")
    print(
        f"tune = {tune_s / max(floor_s, 1e-9):.1f}× one engine pass for 10 sets; "
        f"loading + tune {load_s + tune_s:.2f} s; whole command {command_s:.2f} s "
        f"(target ≤ 5 s: {'met' if command_s <= 5 else 'NOT met'})"
    )
    print(
        f"{'set':<9}{'params':<30}{'raised':>8}{'chatter':>9}{'L1 med s':>10}{'L2 med s':>10}"
        f"{'missed':>8}"
    )
    for c in result.candidates:
        d1 = c.delays.get("high", [])
        d2 = c.delays.get("high_high", [])
        params = ", ".join(f"{k}={v:g}" for k, v in c.overrides.items()) or "current"
        print(
            f"{c.label:<9}{params:<30}{c.raised:>8}{c.chattering:>9}"
            f"{(np.median(d1) / 1000 if d1 else 0):>10.1f}"
            f"{(np.median(d2) / 1000 if d2 else 0):>10.1f}"
            f"{sum(c.missed.values()):>8}"
        )


def _tune_command(root: Path, tag: str, from_ms: int, to_ms: int) -> float:
    """Wall time of ``safeedge review tune`` (9 candidate sets) over the history in ``root``,
    as a user runs it: a fresh process (imports, config, kernels from the numba cache)."""
    import datetime as dt
    import subprocess

    rule = ", ".join(f"{k} = {v}" for k, v in RULE.items())
    config = root / "agent.toml"
    config.write_text(
        f'[gateway]\nsite = "S1"\nid = "{GW}"\ndata_dir = "{root}"\n\n'
        '[uplink]\nenabled = false\nhost = "127.0.0.1"\n\n'
        '[buffer]\npath = "buffer.db"\nkey_file = "buffer.key"\n\n'
        '[[devices]]\ndriver = "modbus_tcp"\nname = "plc"\nhost = "127.0.0.1"\nport = 1502\n'
        'unit_id = 1\n\n[[devices.tags]]\nname = "' + tag + '"\naddress = 0\n\n'
        f'[[rules]]\ntags = ["{tag}"]\n' + rule.replace(", ", "\n") + "\n"
    )

    def iso(ms: int) -> str:
        return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat()

    argv = [sys.executable, "-m", "agent", "review", "tune", "--config", str(config)]
    argv += ["--tag", tag, "--from", iso(from_ms), "--to", iso(to_ms)]
    argv += ["--param", "deadband=0.5,1,2", "--param", "on_delay_s=0,5,10"]
    env = {**os.environ, "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", "")}
    if not env["NUMBA_CACHE_DIR"]:
        env["NUMBA_CACHE_DIR"] = str(ROOT / ".cache/numba")
    subprocess.run(argv, check=True, capture_output=True, env=env)  # kernels cached once
    t = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, env=env)
    return time.perf_counter() - t


def bench_recorder(*, tags: int, ticks: int) -> None:
    """Per-poll cost of the incident recorder for ``tags`` tags at 1 Hz (10 tags a device),
    while idle and while an incident is open, beside ``RuleEngine.evaluate`` of the batch."""
    print(f"\n3. Recorder: {tags} tags, one batch a second, {ticks} timed batches")
    names = [f"T{i:04d}" for i in range(tags)]
    rec = IncidentRecorder(
        config=RecorderConfig(pre_s=600.0),
        tag_names=names,
        devices=[f"dev-{i // 10}" for i in range(tags)],
    )
    engine = RuleEngine(names, [RuleConfig(match="T*", high=80.0, high_high=90.0)])
    rng = np.random.default_rng(3)
    tag = np.arange(tags, dtype=np.int32)
    q = np.zeros(tags, np.uint8)

    def tick(i: int, events: list[AlarmEvent]) -> tuple[float, float]:
        ts = np.full(tags, T0 + i * 1000, np.int64)
        v = rng.normal(50, 5, tags)
        t = time.perf_counter()
        engine.evaluate(tag, ts, v, q)
        t1 = time.perf_counter()
        rec.feed(tag, ts, v, q, events)
        return t1 - t, time.perf_counter() - t1

    for i in range(600):  # fill the 10-minute ring first
        tick(i, [])
    idle = [tick(600 + i, []) for i in range(ticks)]
    trigger = AlarmEvent(T0 + (600 + ticks) * 1000, 5, "high", "raise", 2, 95.0)
    t = time.perf_counter()
    tick(600 + ticks, [trigger])
    open_s = time.perf_counter() - t
    busy = [tick(601 + ticks + i, []) for i in range(ticks)]
    print(f"{'per batch':<40}{'engine ms':>10}{'recorder ms':>13}")
    for label, rows in (("idle (ring only)", idle), ("one incident open", busy)):
        eng = 1000 * float(np.median([r[0] for r in rows]))
        recm = 1000 * float(np.median([r[1] for r in rows]))
        print(f"{label:<40}{eng:>10.3f}{recm:>13.3f}")
    print(
        f"opening (seals 10 tags × 600 s of pre-trigger samples): "
        f"{1000 * open_s:.1f} ms once; ring holds {rec.ring_points:,} points"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--tags", type=int, default=1000)
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--per-tag-day", type=float, default=3.0, help="occurrences per tag per day")
    ap.add_argument("--twin-days", type=float, default=2.0)
    ap.add_argument("--tune-days", type=float, default=30.0)
    ap.add_argument("--recorder-tags", type=int, default=1000)
    ap.add_argument("--recorder-ticks", type=int, default=200)
    ap.add_argument("--mem-devices", type=int, default=10)
    ap.add_argument("--mem-tags", type=int, default=1000)
    ap.add_argument("--mem-s", type=int, default=900, help="simulated seconds (section 4)")
    ap.add_argument("--only", choices=("alarms", "tune", "recorder", "memory"))
    args = ap.parse_args()
    print(_machine())
    if args.only == "memory":
        bench_memory(devices=args.mem_devices, tags=args.mem_tags, seconds=args.mem_s)
        return
    if args.only == "recorder":
        bench_recorder(tags=args.recorder_tags, ticks=args.recorder_ticks)
        return
    with tempfile.TemporaryDirectory(prefix="bench_review_") as tmp:
        (Path(tmp) / "a").mkdir()
        (Path(tmp) / "t").mkdir()
        if args.only in (None, "alarms"):
            bench_alarms(
                Path(tmp) / "a",
                tags=args.tags,
                days=args.days,
                twin_days=min(args.twin_days, args.days),
                per_tag_day=args.per_tag_day,
            )
        if args.only in (None, "tune"):
            bench_tune(Path(tmp) / "t", days=args.tune_days)
    if args.only is not None:
        return
    bench_recorder(tags=args.recorder_tags, ticks=args.recorder_ticks)
    bench_memory(devices=args.mem_devices, tags=args.mem_tags, seconds=args.mem_s)


if __name__ == "__main__":
    main()
