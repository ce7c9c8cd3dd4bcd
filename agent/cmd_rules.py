"""``safeedge rules replay --rules RULES.toml --trace TRACE.csv``: run a recorded trace through
the rule engine and print one JSON object per event (contract: end of design/RULES.md).

Exit codes: 0 events printed (possibly none); 2 bad input (a message on stderr naming file, line
and field; nothing on stdout).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["register"]

_EX_USAGE = 2


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("rules", help="work with alarm rules (replay a trace)")
    rsub = p.add_subparsers(dest="rules_command", metavar="SUBCOMMAND", required=True)
    r = rsub.add_parser(
        "replay",
        help="replay a trace CSV through rule tables, one JSON event per line",
        description="Replay TRACE.csv (ts_ms,tag,value,quality) through the [[rules]] tables of "
        "RULES.toml and print every alarm event as a JSON object per line.",
    )
    r.add_argument("--rules", required=True, type=Path, metavar="RULES.toml")
    r.add_argument("--trace", required=True, type=Path, metavar="TRACE.csv")
    r.add_argument(
        "--state",
        type=Path,
        metavar="FILE",
        help="start from the alarm state in FILE when it exists (as after a restart) and write "
        "the final state to FILE",
    )
    r.set_defaults(func=_replay)


def _read(path: Path) -> str:
    from rules.replay import ReplayInputError

    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ReplayInputError(str(path), 0, "file", str(exc)) from exc


def _replay(args: argparse.Namespace) -> int:
    # imported here: numba loads only for the commands that need it
    from rules.replay import (
        ReplayInputError,
        dump_state_file,
        load_rules,
        load_state_file,
        parse_trace,
        replay_with_state,
    )

    state_path: Path | None = args.state
    try:
        rules = load_rules(_read(args.rules), str(args.rules))
        trace = parse_trace(_read(args.trace), str(args.trace))
        state = {}
        if state_path is not None and state_path.exists():
            try:
                raw = state_path.read_bytes()
            except OSError as exc:
                raise ReplayInputError(str(state_path), 0, "file", str(exc)) from exc
            state = load_state_file(raw, str(state_path))
        events, final = replay_with_state(rules, trace, str(args.rules), state=state)
        if state_path is not None:
            tmp = state_path.with_name(state_path.name + ".tmp")
            try:
                tmp.write_bytes(dump_state_file(final))
                tmp.replace(state_path)
            except OSError as exc:
                raise ReplayInputError(str(state_path), 0, "file", str(exc)) from exc
    except ReplayInputError as exc:
        print(f"safeedge rules replay: {exc}", file=sys.stderr)
        return _EX_USAGE
    out = sys.stdout
    for event in events:
        out.write(json.dumps(event, allow_nan=False) + "\n")
    out.flush()
    return 0
