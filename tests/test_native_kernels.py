"""The native kernels (rules.native): built by ``safeedge warm-cache``, equal to the JIT on the
whole rule and statistics suites, loaded by a real agent that then maps no LLVM, and never
loaded when stale, damaged or unbuildable (the JIT runs and says why)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.agentproc import AgentProc, GasLine, agent_config, env

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("NUMBA_CACHE_DIR") or ROOT / ".cache" / "numba")


def _env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in env().items() if k != "SAFEEDGE_KERNELS"}  # auto unless given
    return {**base, **extra}


def _run(code: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT, env=_env(**extra), capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _warm(cache: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "warm-cache", "--cache-dir", str(cache), *args],
        cwd=ROOT, env=_env(**extra), capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.fixture(scope="module")
def native_cache() -> Path:
    """The test run's cache with both native modules (built here when `make test` did not)."""
    done = _warm(CACHE, "--require-native")
    assert done.returncode == 0, done.stdout + done.stderr
    return CACHE


_PROBE = """
import json, sys
import numpy as np
from agent.kernels import kernel_summary
from rules import RuleEngine
from rules.config import RuleConfig
e = RuleEngine(["A", "B"], [RuleConfig(tags=("A", "B"), high=10.0, roc_limit_per_min=1.0,
                                       roc_window_s=5.0)])
ev = e.evaluate(np.array([0, 1, 0], np.int32), np.array([1000, 1000, 2000], np.int64),
                np.array([11.0, 1.0, 30.0]), np.zeros(3, np.uint8))
k = kernel_summary()
print(json.dumps({"impl": k.impl, "reason": k.reason, "paths": [str(p) for p in k.paths],
                  "events": [(x.tag, x.alarm, x.event, x.level) for x in ev],
                  "numba": "numba" in sys.modules, "llvmlite": "llvmlite" in sys.modules}))
"""


def _probe(**extra: str) -> dict[str, object]:
    done = _run(_PROBE, **extra)
    assert done.returncode == 0, done.stderr[-3000:]
    out: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def test_native_kernels_load_without_numba_and_agree_with_the_jit(native_cache: Path) -> None:
    native = _probe(NUMBA_CACHE_DIR=str(native_cache), SAFEEDGE_KERNELS="native")
    jit = _probe(NUMBA_CACHE_DIR=str(native_cache), SAFEEDGE_KERNELS="jit")
    assert native["impl"] == "native" and native["reason"] == ""
    assert not native["numba"] and not native["llvmlite"]
    assert len(native["paths"]) == 2  # type: ignore[arg-type]
    assert jit["impl"] == "jit" and jit["reason"] == "SAFEEDGE_KERNELS=jit" and jit["numba"]
    assert native["events"] == jit["events"] and native["events"]


def test_the_rule_and_statistics_suites_pass_on_the_other_kernel_build(native_cache: Path) -> None:
    # This process runs tests/rules and the statistics tests on whichever build it loaded
    # (native after `make test`'s warm-cache, else the JIT); a child runs them on the other,
    # so both builds meet the naive twins of RULES.md and of the statistics windows.
    from rules.native import rule_kernels

    other = "jit" if rule_kernels().impl == "native" else "native"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/rules", "tests/agent/shaping/test_stats.py",
         "-q", "-m", "not slow", "-p", "no:cacheprovider", "-x"],
        cwd=ROOT,
        env={**env(), "NUMBA_CACHE_DIR": str(native_cache), "SAFEEDGE_KERNELS": other},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and " failed" not in run.stdout


def test_a_stale_or_damaged_module_is_not_loaded_and_the_jit_says_why(
    native_cache: Path, tmp_path: Path
) -> None:
    built = sorted(native_cache.glob("safeedge_rules_*.so"))
    assert len(built) == 1
    # a module of other sources: another fingerprint in its name; never looked at
    stale = tmp_path / "stale"
    stale.mkdir()
    for f in native_cache.glob("safeedge_rules_*"):  # the module and its checksum
        shutil.copy(f, stale / f.name.replace("safeedge_rules_", "safeedge_rules_0"))
    got = _probe(NUMBA_CACHE_DIR=str(stale))
    assert got["impl"] == "jit" and "no native module safeedge_rules_" in str(got["reason"])
    assert "safeedge warm-cache builds it" in str(got["reason"])
    # the right name, damaged content (a torn copy): the loader's error, the JIT runs
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / built[0].name).write_bytes(built[0].read_bytes()[:4096])
    sha = built[0].with_name(built[0].name.split(".", 1)[0] + ".sha256")
    shutil.copy(sha, damaged / sha.name)  # its checksum is intact: the content is not
    got = _probe(NUMBA_CACHE_DIR=str(damaged))
    assert (
        got["impl"] == "jit"
        and f"native module {damaged / built[0].name} did not load: checksum mismatch"
        in str(got["reason"])
    )
    # required but unusable: a clear error naming the file, no silent JIT
    done = _run(_PROBE, NUMBA_CACHE_DIR=str(damaged), SAFEEDGE_KERNELS="native")
    assert done.returncode != 0 and "SAFEEDGE_KERNELS=native: native module" in done.stderr
    bad = _run(_PROBE, NUMBA_CACHE_DIR=str(damaged), SAFEEDGE_KERNELS="fast")
    assert "SAFEEDGE_KERNELS='fast': use one of auto, native, jit" in bad.stderr


def test_warm_cache_rebuilds_a_damaged_module_and_reports_a_missing_compiler(
    native_cache: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    shutil.copytree(native_cache, cache)
    module = sorted(cache.glob("safeedge_stats_*"))[0]
    module.write_bytes(b"\x7fELF torn")
    done = _warm(cache, "--require-native")
    assert done.returncode == 0, done.stderr
    assert f"native module {module.name} built in" in done.stdout
    assert "without numba" in done.stdout
    assert _probe(NUMBA_CACHE_DIR=str(cache), SAFEEDGE_KERNELS="native")["impl"] == "native"
    # no C compiler: the JIT cache is still filled, the command says what happens instead
    bare = tmp_path / "bare"
    done = _warm(bare, CC="/nonexistent/cc")
    assert done.returncode == 0, done.stderr
    assert "native kernels not built: building safeedge_rules_" in done.stderr
    assert "use the JIT cache instead" in done.stderr
    assert list(bare.rglob("*.nbi")) and not list(bare.glob("safeedge_*.so"))
    assert _warm(bare, "--require-native", CC="/nonexistent/cc").returncode == 1
    assert _probe(NUMBA_CACHE_DIR=str(bare))["impl"] == "jit"


@pytest.fixture
def line() -> Iterator[GasLine]:
    gas = GasLine()
    yield gas
    gas.close()


def _maps_llvm(pid: int) -> bool:
    return "libllvmlite" in Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.integration
def test_a_running_agent_on_native_kernels_maps_no_llvm_and_alarms(
    native_cache: Path, tmp_path: Path, line: GasLine
) -> None:
    data = tmp_path / "data"
    config = tmp_path / "agent.toml"
    config.write_text(agent_config(data_dir=data, line=line.path))
    line.value = 60.0  # above high_high: the native kernel must raise it
    agent = AgentProc(config, extra_env={"NUMBA_CACHE_DIR": str(native_cache)})
    try:
        log = agent.wait_log("event=raise")
        assert "rules_ready" in log and "kernels=native modules=safeedge_rules_" in log
        assert not _maps_llvm(agent.proc.pid)
        status = subprocess.run(
            [sys.executable, "-m", "agent", "status", "--config", str(config), "--json"],
            capture_output=True, text=True, timeout=60, env=env(),
        )  # fmt: skip
        doc = json.loads(status.stdout)
        assert doc["kernels"] == "native" and doc["kernels_reason"] == ""
    finally:
        assert agent.stop() == 0
    # the same site on the JIT: numba (and LLVM) loaded, and the log says why
    agent = AgentProc(
        config, extra_env={"NUMBA_CACHE_DIR": str(native_cache), "SAFEEDGE_KERNELS": "jit"}
    )
    try:
        log = agent.wait_log("rules_ready")
        assert 'kernels=jit reason="SAFEEDGE_KERNELS=jit"' in log
        assert _maps_llvm(agent.proc.pid)
    finally:
        assert agent.stop() == 0


def test_commissioning_passes_native_kernels_and_warns_on_the_jit(
    native_cache: Path, tmp_path: Path
) -> None:
    from provisioning.commission_host import kernel_check

    check = kernel_check(None, native_cache)  # type: ignore[arg-type]  # cfg is not read
    assert check.status == "PASS", check
    assert "loaded without numba" in check.evidence
    empty = tmp_path / "empty"
    check = kernel_check(None, empty)  # type: ignore[arg-type]
    assert check.status == "WARN", check
    assert "no native kernels: no native module" in check.evidence
    assert "gcc" in check.fix
