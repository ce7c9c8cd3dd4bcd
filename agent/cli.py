"""The ``safeedge`` command line.

Subcommands are contributed by modules that expose ``register(subparsers)``; each registered
parser sets ``func(args) -> int`` (the exit code). The agent's own commands are listed in
``_BUILTIN``; packages above the agent (``provisioning``) contribute theirs through the
``safeedge.commands`` entry-point group, so the agent never imports them.

Exit codes: 0 ok, 1 failure, 2 bad usage or bad input, 78 (EX_CONFIG) bad config.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import Protocol

from agent import __version__

__all__ = ["main"]

_BUILTIN = (
    "agent.cmd_run",
    "agent.cmd_config",
    "agent.cmd_rules",
    "agent.cmd_buffer",
    "agent.cmd_status",
)


class _CommandModule(Protocol):
    def register(self, sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None: ...


def _command_modules() -> list[_CommandModule]:
    mods: list[_CommandModule] = [importlib.import_module(name) for name in _BUILTIN]
    for ep in sorted(entry_points(group="safeedge.commands"), key=lambda e: e.name):
        mods.append(ep.load())
    return mods


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="safeedge",
        description="SafeEdge: work-safety monitoring edge gateway agent.",
    )
    parser.add_argument("--version", action="version", version=f"safeedge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for mod in _command_modules():
        mod.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = args.func
    try:
        code = func(args)
    except KeyboardInterrupt:
        return 130
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
