"""The ``safeedge`` command line.

Subcommands are contributed by modules that expose ``register(subparsers)``; each registered
parser sets ``func(args) -> int`` (the exit code). The agent's own commands are listed in
``_BUILTIN`` by name; packages above the agent (``provisioning``, ``central``) contribute theirs
through the ``safeedge.commands`` entry-point group (named there too), so the agent never
imports them.

Only the module of the command being run is imported (the daemon does not load the simulator,
the listener or the installer's tools); ``--help`` or an unknown command loads them all.

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

_BUILTIN: dict[str, str] = {  # command name → the module that registers it
    "run": "agent.cmd_run",
    "check-config": "agent.cmd_config",
    "rules": "agent.cmd_rules",
    "buffer": "agent.cmd_buffer",
    "warm-cache": "agent.cmd_warm",
    "review": "agent.review.cmd",
    "console": "agent.console.cli",
}


class _CommandModule(Protocol):
    def register(self, sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None: ...


def _command_modules(command: str | None = None) -> list[_CommandModule]:
    """The modules registering ``command`` (all of them when it is None or unknown)."""
    eps = sorted(entry_points(group="safeedge.commands"), key=lambda e: e.name)
    if command in _BUILTIN:
        return [importlib.import_module(_BUILTIN[command])]
    for ep in eps:
        if ep.name == command:
            return [ep.load()]
    mods: list[_CommandModule] = [importlib.import_module(name) for name in _BUILTIN.values()]
    mods += [ep.load() for ep in eps]
    return mods


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser for ``command`` alone, or for every command when it is None."""
    parser = argparse.ArgumentParser(
        prog="safeedge",
        description="SafeEdge: work-safety monitoring edge gateway agent.",
    )
    parser.add_argument("--version", action="version", version=f"safeedge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for mod in _command_modules(command):
        mod.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)  # no global option has a value
    parser = build_parser(command)
    args = parser.parse_args(argv)
    func = args.func
    try:
        code = func(args)
    except KeyboardInterrupt:
        return 130
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
