"""The retention projection: the size model against a real store, and check-config's warning."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from agent import cmd_config
from agent.codec import TelemetryEncoder
from agent.config import loads_config
from agent.config.retention import POINT_BYTES, RECORD_BYTES, project_telemetry
from agent.telemetry import TelemetryBatcher
from buffer import Store
from buffer.record import Stream

GATEWAY = '[gateway]\nsite = "S1"\nid = "G1"\n'


def _tcp(n_tags: int, poll_s: float) -> str:
    out = '[[devices]]\ndriver = "modbus_tcp"\nname = "plc"\nhost = "10.0.0.5"\n'
    out += f"poll_interval_s = {poll_s}\n"
    for i in range(n_tags):
        out += f'[[devices.tags]]\nname = "TT-{i:03d}"\ntable = "holding"\n'
        out += f'address = {2 * i}\ntype = "float32"\n'
    return out


@pytest.mark.parametrize("n_tags", [1, 15, 60])
def test_the_size_model_is_at_or_above_what_the_real_store_accounts(
    tmp_path: Path, n_tags: int
) -> None:
    now = [1_700_000_000_000]
    store = Store.open(
        path=tmp_path / "b.db", key_file=tmp_path / "k", gateway_id="G1", clock_ms=lambda: now[0]
    )
    enc = TelemetryEncoder([f"TT-{i:03d}" for i in range(n_tags)], {1: "bad_comm"})
    batcher = TelemetryBatcher(max_points=200, max_bytes=65536, linger_ms=0)
    rng = np.random.default_rng(1)
    polls = 300
    for _ in range(polls):
        now[0] += 1000
        tag = np.arange(n_tags, dtype=np.int32)
        bodies = batcher.add_rows(
            enc.rows(tag, np.full(n_tags, now[0], dtype=np.int64),
                     np.round(20 + rng.normal(0, 1, n_tags), 3), np.zeros(n_tags, np.uint8)),
            now[0],
        )  # fmt: skip
        store.append(Stream.TELEMETRY, bodies)
    measured = store.stats().bytes / polls
    store.close()
    model = RECORD_BYTES + POINT_BYTES * n_tags
    assert measured <= model <= 1.5 * measured


def test_check_config_warns_when_the_capacity_holds_less_than_the_retention(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "a.toml"
    path.write_text(GATEWAY + "[buffer]\ncapacity_mb = 16.0\n" + _tcp(15, 1.0))
    p = project_telemetry(loads_config(path.read_text()))
    assert 0.5 < p.days_held < 2  # 15 points/s ≈ 10 MiB a day
    parser = argparse.ArgumentParser()
    cmd_config.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["check-config", str(path)])
    assert args.func(args) == 0  # a warning, not an error
    err = capsys.readouterr().err
    assert "capacity 16 MiB holds about" in err and "retention_days = 30" in err
    assert "set capacity_mb to at least" in err
