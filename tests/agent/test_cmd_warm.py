"""``safeedge warm-cache`` fills numba's cache: the first start loads, not compiles."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _warm(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    return subprocess.run(
        [sys.executable, "-m", "agent", "warm-cache", *args],
        capture_output=True, text=True, timeout=120, env={**base, **(env or {})},
    )  # fmt: skip


def test_warm_cache_writes_the_kernels_and_a_second_run_only_loads_them(tmp_path: Path) -> None:
    cache = tmp_path / "numba"
    first = _warm("--cache-dir", str(cache))
    assert first.returncode == 0, first.stderr
    files = {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()}
    assert any(p.suffix == ".nbi" for p in files) and any(p.suffix == ".nbc" for p in files)
    second = _warm(env={"NUMBA_CACHE_DIR": str(cache)})
    assert second.returncode == 0, second.stderr
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()} == files


def test_warm_cache_for_a_config_uses_its_data_directory(tmp_path: Path) -> None:
    (tmp_path / "agent.toml").write_text(
        '[gateway]\nsite = "S"\nid = "G"\ndata_dir = "state"\n[uplink]\nenabled = false\n'
    )
    done = _warm("--config", str(tmp_path / "agent.toml"))
    assert done.returncode == 0, done.stderr
    assert list((tmp_path / "state" / "numba-cache").rglob("*.nbi"))


def test_warm_cache_without_a_place_says_what_to_give() -> None:
    done = _warm()
    assert done.returncode == 2
    assert "--cache-dir" in done.stderr
