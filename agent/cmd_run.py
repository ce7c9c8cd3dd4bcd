"""``safeedge run``: the agent daemon.

Exit codes: 0 after a clean stop (SIGTERM/SIGINT), 78 (EX_CONFIG) when the config, a rule, the
buffer key or a credential needs a human (systemd's unit does not restart on 78), 1 on an
unexpected failure (systemd restarts it).

SIGHUP reloads the config file (agent/runtime/reload.py). An invalid config at start is fatal
(78) only when there is no last good config for this gateway in its data directory
(agent/lastgood.py); otherwise the agent runs the last good one, degraded, and records
``config_rejected``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from agent.logs import LOG_FORMATS, LogFormat, kv, setup_logging

__all__ = ["EX_CONFIG", "register", "run_agent"]

EX_CONFIG = 78
log = logging.getLogger("safeedge.run")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run the agent (poll, evaluate, buffer, forward)")
    p.add_argument("--config", "-c", required=True, type=Path, help="agent config file (TOML)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument(
        "--log-format",
        default=None,
        choices=LOG_FORMATS,
        help="text lines or one JSON object per line (default: [logging].format, else text)",
    )
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    setup_logging(args.log_level, args.log_format or "text")
    return run_agent(args.config, log_level=args.log_level, log_format=args.log_format)


def _file_hash(path: Path) -> str:
    import hashlib

    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError:
        return ""


def run_agent(
    config_path: Path, *, log_level: str | None = None, log_format: LogFormat | None = None
) -> int:
    """Load, build and run the agent until SIGTERM/SIGINT; returns the process exit code.

    ``log_level`` given and ``log_format`` None: logging is set up again in the config's
    ``[logging].format`` once the config is loaded."""
    from agent import lastgood
    from agent.config import ConfigError, load_config, resolved_paths

    degraded: list[str] = []
    start_events: list[tuple[str, dict[str, object]]] = []
    try:
        cfg = load_config(config_path, check_files=True)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        found = lastgood.fallback(config_path)
        if found is None:
            print(f"safeedge: {config_path}: invalid config, not starting", file=sys.stderr)
            return EX_CONFIG
        cfg, used = found
        print(
            f"safeedge: {config_path}: invalid config; running the last good config {used}"
            " (degraded)",
            file=sys.stderr,
        )
        degraded.append(f"config rejected ({len(exc.issues)} issues): running the last good one")
        errors = lastgood.describe(exc)
        h = _file_hash(config_path)  # "hash" (the v2 schema), "config_hash" (issue 13's name)
        start_events.append(("config_rejected", {"hash": h, "config_hash": h, "errors": errors}))
    if log_level is not None and log_format is None and cfg.logging.format != "text":
        setup_logging(log_level, cfg.logging.format)
    paths = resolved_paths(cfg, config_path)  # cfg's paths are absolute: a typed view of them
    # numba reads NUMBA_CACHE_DIR when first imported: set it before the rules kernels load
    # (loading the config does not import them; agent.pipeline does).
    os.environ.setdefault("NUMBA_CACHE_DIR", str(paths.data_dir / "numba-cache"))
    from agent.kernels import kernel_summary
    from rules.native import NativeKernelsError

    try:  # the native modules of safeedge warm-cache, or numba's JIT (SAFEEDGE_KERNELS)
        kernel_summary()
    except NativeKernelsError as exc:
        print(f"safeedge: {exc}", file=sys.stderr)
        return EX_CONFIG

    from agent.credentials import BROKER_PASSWORD, broker_password, credential, with_credentials
    from agent.pipeline import Pipeline
    from agent.uplink import UplinkConfigError
    from buffer import BufferNeedsHumanError
    from drivers import DriverConfigError
    from rules import RuleConfigError

    paths = with_credentials(paths)  # systemd credentials win over the config's files
    try:
        password = broker_password(cfg, config_path)
    except (OSError, UnicodeDecodeError) as exc:
        source = credential(BROKER_PASSWORD) or f"uplink.password_file {paths.password_file}"
        print(f"safeedge: {source}: {exc}", file=sys.stderr)
        return EX_CONFIG
    try:
        pipeline = Pipeline(cfg, paths, password=password)
    except (RuleConfigError, DriverConfigError, UplinkConfigError) as exc:
        # check-config makes every check these make: reaching here is a bug, but one that
        # needs a human, not a restart loop.
        print(f"safeedge: {config_path}: {exc}", file=sys.stderr)
        return EX_CONFIG

    async def main() -> None:
        from agent.runtime import Runtime

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        runtime: Runtime = pipeline
        runtime.degraded = degraded
        runtime.start_events = start_events
        while True:
            runtime.config_path = config_path
            loop.add_signal_handler(signal.SIGHUP, runtime.reload_requested.set)
            await runtime.run(stop)
            if runtime.restart_with is None or stop.is_set():
                return
            log.info(kv("restarting", config_hash=runtime.restart_with.config_hash))
            runtime = Runtime(runtime.restart_with)

    log.info(
        kv(
            "starting",
            site=cfg.gateway.site,
            gateway=cfg.gateway.id,
            config=config_path,
            data_dir=paths.data_dir,
        )
    )
    try:
        asyncio.run(main())
    except BufferNeedsHumanError as exc:
        print(f"safeedge: buffer: {exc}", file=sys.stderr)
        return EX_CONFIG
    return 0
