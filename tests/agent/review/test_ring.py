"""The recorder's pre-trigger ring: columnar, fixed capacity from a budget, a warning when the
budget holds less than the window (agent/review/ring.py)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from agent.config import loads_config
from agent.review.config import RecorderConfig
from agent.review.recorder import IncidentRecorder
from agent.review.ring import PointRing, bytes_per_point, ring_plan
from agent.runtime.incidents import recorder_warnings, tag_poll_periods
from provisioning.simulator import tank_farm_config

T0 = 1_780_000_000_000


def _batch(first: int, n: int, ts: int) -> tuple[np.ndarray, ...]:
    tag = (np.arange(first, first + n) % 7).astype(np.int32)
    return (
        tag,
        np.full(n, ts, np.int64),
        np.arange(first, first + n, dtype=np.float64),
        (np.arange(first, first + n) % 3).astype(np.uint8),
    )


def test_the_ring_keeps_the_newest_points_in_feed_order_across_wrap_and_overflow() -> None:
    ring = PointRing(50, n_tags=7)
    held: list[tuple[int, int, float, int]] = []  # the naive twin: a list of every point
    first = 0
    for k, n in enumerate([13, 20, 9, 30, 1, 44, 70, 5, 17]):
        cols = _batch(first, n, T0 + 1000 * k)
        ring.push(*cols)
        held += zip(*(c.tolist() for c in cols), strict=True)
        first += n
    assert len(ring) == 50 and ring.dropped == first - 50
    member = np.ones(7, bool)
    got = list(zip(*(c.tolist() for c in ring.select(member, 0)), strict=True))
    assert got == held[-50:]
    member[[1, 4]] = False
    got = list(zip(*(c.tolist() for c in ring.select(member, T0 + 8000)), strict=True))
    assert got == [p for p in held[-50:] if p[0] not in (1, 4) and p[1] >= T0 + 8000]


def test_pruning_drops_whole_batches_older_than_the_window_and_counts_nothing() -> None:
    ring = PointRing(1000, n_tags=7)
    for k in range(10):
        ring.push(*_batch(10 * k, 10, T0 + 1000 * k))
    ring.prune(T0 + 6500)  # batches 0..6 are older
    assert len(ring) == 30 and ring.dropped == 0
    ts = ring.select(np.ones(7, bool), 0)[1]
    assert sorted(set(ts.tolist())) == [T0 + 7000, T0 + 8000, T0 + 9000]


def test_the_plan_is_the_window_times_the_poll_rate_and_warns_with_the_numbers() -> None:
    assert bytes_per_point(10_000) == 19 and bytes_per_point(70_000) == 21
    plan = ring_plan(
        pre_s=600.0,
        ring_mb=128.0,
        max_points=None,
        n_tags=10_000,
        watched_poll_s=[1.0] * 10_000,
        watched=10_000,
    )
    assert plan.needed == 10_000 * 602 and plan.capacity == plan.needed
    assert plan.nbytes == 6_020_000 * 19 and plan.warning is None
    small = ring_plan(
        pre_s=600.0,
        ring_mb=64.0,
        max_points=None,
        n_tags=10_000,
        watched_poll_s=[1.0] * 10_000,
        watched=10_000,
    )
    assert small.capacity == 64 * 2**20 // 19
    assert small.warning is not None
    for text in ("pre_s = 600 s", "10,000.0 samples/s", "6,020,000 ring points", "ring_mb"):
        assert text in small.warning
    assert "window kept is about 351 s" in small.warning  # 3,532,045 points / 10,000 per s - 2
    assert "raise ring_mb to at least 110" in small.warning


def test_a_recorder_of_10_000_tags_watches_them_in_one_ring_sized_to_the_window() -> None:
    names = [f"D{d}T{i}" for d in range(10) for i in range(1000)]
    rec = IncidentRecorder(
        config=RecorderConfig(),
        tag_names=names,
        devices=[f"plc{i // 1000}" for i in range(10_000)],
        poll_s=[1.0] * 10_000,
    )
    assert rec.plan.watched == 10_000 and rec.plan.capacity == 6_020_000
    few = IncidentRecorder(
        config=RecorderConfig(tags=("D3T7",), groups=(("D3T7", "D5T0"),)),
        tag_names=names,
        devices=[f"plc{i // 1000}" for i in range(10_000)],
        poll_s=[0.5] * 10_000,
    )
    assert few.plan.watched == 1001 and few.plan.capacity == 1001 * 1202


def _config(extra: str) -> str:
    text = tank_farm_config(
        modbus_host="127.0.0.1",
        modbus_port=1502,
        mqtt_host="127.0.0.1",
        mqtt_port=1883,
        data_dir="data",
    )
    return text + extra


def test_config_check_warns_when_the_ring_budget_holds_less_than_pre_s(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ok = loads_config(_config(""))
    assert recorder_warnings(ok) == []
    assert set(tag_poll_periods(ok).values()) <= {d.poll_interval_s for d in ok.devices}
    path = tmp_path / "agent.toml"
    path.write_text(_config("\n[review.recorder]\nring_mb = 0.001\n"))
    (warning,) = recorder_warnings(loads_config(path.read_text()))
    assert "ring_mb allows (55 points" in warning
    run = subprocess.run(
        [sys.executable, "-m", "agent", "check-config", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "warning: review.recorder: pre_s = 600 s" in run.stderr
