"""``safeedge warm-cache``: compile the rule and telemetry-statistics kernels into numba's on-disk
cache ahead of time.

Run by install.sh (and the offline bundle's installer) as the service user, so the first start
after an install loads the kernels from the cache (~0.15 s) instead of compiling them
(~0.5-0.9 s per kernel, STACK.md) while the site waits for monitoring to begin.

The cache directory is, in order: ``--cache-dir``, ``NUMBA_CACHE_DIR`` (the unit sets it), or
``numba-cache`` in the config's data directory (what ``safeedge run`` uses without the unit).
numba reads ``NUMBA_CACHE_DIR`` when first imported, so it is set before the rules package
loads its kernels. Exit 0 when the kernels are compiled and the cache holds them, 1 otherwise,
78 for a config that does not load.
"""

from __future__ import annotations

import argparse
import os
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
    return 0


def warm_cache(cache_dir: Path) -> tuple[float, list[Path]]:
    """Compile (or load) every kernel with ``cache_dir`` as numba's cache; returns the time it
    took and the cache files now there. Must run before anything in the process imports numba."""
    if "numba" in sys.modules and os.environ.get("NUMBA_CACHE_DIR") != str(cache_dir):
        raise RuntimeError("numba was imported before its cache directory could be set")
    cache_dir.mkdir(parents=True, exist_ok=True)
    os.environ["NUMBA_CACHE_DIR"] = str(cache_dir)
    from rules import RuleEngine

    t0 = time.monotonic()
    RuleEngine(["T"], []).warm_up()
    from agent.shaping.stats import warm_up as warm_stats  # the telemetry statistics kernels

    warm_stats()
    return time.monotonic() - t0, sorted(p for p in cache_dir.rglob("*") if p.is_file())
