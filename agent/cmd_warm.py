"""``safeedge warm-cache``: compile the rule and telemetry-statistics kernels ahead of time.

Run by install.sh (and the offline bundle's installer) as the service user. Two things land in
the cache directory:

- numba's on-disk cache of the JIT kernels, so a JIT start loads them (~0.15 s) instead of
  compiling them (~0.5-0.9 s per kernel, STACK.md) while the site waits for monitoring;
- the **native modules** (:mod:`rules.native`): the same kernels compiled with ``numba.pycc``
  for this CPU into extension modules. The agent loads those and never imports numba or
  llvmlite, which saves ~145 MB of resident memory (``benchmarks/bench_memory.py``). Building
  them needs a C compiler; without one this says so, exits 0 and the agent uses the JIT cache
  (``--require-native`` makes that exit 1). Each module is then loaded once in a fresh process
  with ``SAFEEDGE_KERNELS=native`` to prove that it loads without numba.

The cache directory is, in order: ``--cache-dir``, ``NUMBA_CACHE_DIR`` (the unit sets it), or
``numba-cache`` in the config's data directory (what ``safeedge run`` uses without the unit).
numba reads ``NUMBA_CACHE_DIR`` when first imported, so it is set before the rules package
loads its kernels. Exit 0 when the kernels are compiled and the cache holds them, 1 otherwise,
78 for a config that does not load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["register", "warm_cache"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "warm-cache", help="compile the rule and statistics kernels into numba's cache"
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--cache-dir", type=Path, help="numba cache directory to fill")
    where.add_argument(
        "--config", "-c", type=Path, help="use <data_dir>/numba-cache of this config"
    )
    native = p.add_mutually_exclusive_group()
    native.add_argument(
        "--no-native", action="store_true", help="fill only the JIT cache (no C compiler needed)"
    )
    native.add_argument(
        "--require-native",
        action="store_true",
        help="exit 1 when the native modules cannot be built or loaded",
    )
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    if args.cache_dir is not None:
        cache = args.cache_dir
    elif args.config is not None:
        from agent.config import ConfigError, load_config, resolved_paths

        try:
            cfg = load_config(args.config)
        except ConfigError as exc:
            print(str(exc), file=sys.stderr)
            return 78
        cache = resolved_paths(cfg, args.config).data_dir / "numba-cache"
    elif os.environ.get("NUMBA_CACHE_DIR"):
        cache = Path(os.environ["NUMBA_CACHE_DIR"])
    else:
        print("safeedge warm-cache: give --cache-dir or --config (or set NUMBA_CACHE_DIR)",
              file=sys.stderr)  # fmt: skip
        return 2
    seconds, files = warm_cache(cache)
    if not files:
        print(f"safeedge warm-cache: nothing was written to {cache}", file=sys.stderr)
        return 1
    print(f"kernels ready in {seconds:.2f} s; {len(files)} cache files in {cache}")
    if args.no_native:
        return 0
    ok = True
    for line, good in build_native(cache):
        print(
            line if good else f"safeedge warm-cache: {line}",
            file=sys.stdout if good else sys.stderr,
        )
        ok = ok and good
    if not ok:
        print(
            "safeedge warm-cache: the agent will load numba and use the JIT cache instead"
            " (~145 MB more memory)",
            file=sys.stderr,
        )
        return 1 if args.require_native else 0
    return 0


def warm_cache(cache_dir: Path) -> tuple[float, list[Path]]:
    """Compile (or load) every kernel with ``cache_dir`` as numba's cache; returns the time it
    took and the cache files now there. Must run before anything in the process imports numba."""
    if "numba" in sys.modules and os.environ.get("NUMBA_CACHE_DIR") != str(cache_dir):
        raise RuntimeError("numba was imported before its cache directory could be set")
    cache_dir.mkdir(parents=True, exist_ok=True)
    os.environ["NUMBA_CACHE_DIR"] = str(cache_dir)
    os.environ["SAFEEDGE_KERNELS"] = "jit"  # this fills numba's cache, whatever is built
    from rules import RuleEngine

    t0 = time.monotonic()
    RuleEngine(["T"], []).warm_up()
    from agent.shaping.stats import warm_up as warm_stats  # the telemetry statistics kernels

    warm_stats()
    return time.monotonic() - t0, sorted(p for p in cache_dir.rglob("*") if p.is_file())


_PROBE = """
import json, sys, time
t = time.perf_counter()
from rules import RuleEngine
from agent.shaping.stats import warm_up
engine = RuleEngine(["T"], [])
engine.warm_up()
warm_up()
print(json.dumps({"numba": "numba" in sys.modules, "s": time.perf_counter() - t}))
"""


def _probe(cache_dir: Path) -> tuple[dict[str, object] | None, str]:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir), "SAFEEDGE_KERNELS": "native"}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        return None, (done.stderr.strip().splitlines() or ["no output"])[-1]
    probe: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    if probe["numba"]:
        return None, "numba was imported too"
    return probe, ""


def build_native(cache_dir: Path) -> list[tuple[str, bool]]:
    """Make sure ``cache_dir`` holds native modules for both kernel sets that load, in a fresh
    process, without numba: modules already there are only loaded; when that fails (missing,
    stale, or a damaged file) they are built again (:func:`rules.native.build`). One line per
    step and whether it went well. Call after :func:`warm_cache` (numba is imported by then)."""
    from agent.shaping.stats import STATS_KERNELS
    from rules.native import RULE_KERNELS, NativeKernelsError, build, module_path

    probe, _ = _probe(cache_dir)
    sets = (RULE_KERNELS, STATS_KERNELS)
    if probe is not None:
        names = ", ".join(module_path(ks, cache_dir).name for ks in sets)
        return [(f"native modules {names} already built; they load in {probe['s']:.2f} s", True)]
    lines: list[tuple[str, bool]] = []
    for ks in sets:
        path = module_path(ks, cache_dir)
        t0 = time.monotonic()
        try:
            build(ks, cache_dir)
        except NativeKernelsError as exc:
            return [*lines, (f"native kernels not built: {exc}", False)]
        lines.append((f"native module {path.name} built in {time.monotonic() - t0:.1f} s", True))
    probe, why = _probe(cache_dir)
    if probe is None:
        return [*lines, (f"native modules did not load: {why}", False)]
    lines.append((f"native kernels load in {probe['s']:.2f} s without numba", True))
    return lines
