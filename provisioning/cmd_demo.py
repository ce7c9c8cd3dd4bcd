"""``safeedge demo``: simulator + broker + agent + platform listener on this machine."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="run the agent on a simulated tank farm with a local broker and platform listener",
    )
    p.add_argument("--workdir", type=Path, default=Path(".demo"), help="wiped at start")
    p.add_argument("--duration", type=float, default=None, help="seconds (default: until Ctrl-C)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--time-scale", type=float, default=1.0, help="scenario speed-up")
    p.add_argument("--leak-start-s", type=float, default=10.0, help="scenario time of the leak")
    p.add_argument("--no-broker", action="store_true", help="run without MQTT: the agent buffers")
    p.add_argument("--verbose", action="store_true", help="print every telemetry message too")
    p.add_argument(
        "--no-refusal", action="store_true", help="skip the PLC's scripted refusal and re-plan"
    )
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from provisioning.demo import DemoOptions, run_demo

    result = run_demo(
        DemoOptions(
            workdir=args.workdir,
            duration_s=args.duration,
            seed=args.seed,
            time_scale=args.time_scale,
            leak_start_s=args.leak_start_s,
            broker=not args.no_broker,
            verbose=args.verbose,
            refusal=not args.no_refusal,
        )
    )
    return 0 if result.agent_exit in (0, None) else 1
