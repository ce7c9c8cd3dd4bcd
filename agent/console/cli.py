"""``safeedge console add-user NAME [--role viewer|operator]``: prints a ``[[console.users]]``
entry with a scrypt hash of the password (asked twice on a terminal, or one line on stdin with
``--password-stdin``) to paste into the agent's config. The password itself is never printed."""

from __future__ import annotations

import argparse
import getpass
import re
import sys

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("console", help="the local web console: manage its users")
    csub = p.add_subparsers(dest="console_command", metavar="ACTION", required=True)
    add = csub.add_parser("add-user", help="print a [[console.users]] entry with a password hash")
    add.add_argument("name", help="user name: letters, digits, _ . - (1 to 64)")
    add.add_argument("--role", choices=["viewer", "operator"], default="viewer")
    add.add_argument("--password-stdin", action="store_true", help="read one line from stdin")
    add.set_defaults(func=_add_user)


def _add_user(args: argparse.Namespace) -> int:
    from agent.console.passwords import hash_password

    if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", args.name):
        print("safeedge: console add-user: the name must be 1 to 64 of A-Z a-z 0-9 _ . -",
              file=sys.stderr)  # fmt: skip
        return 2
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("safeedge: console add-user: the passwords differ", file=sys.stderr)
            return 2
    if len(password) < 8:
        print("safeedge: console add-user: use at least 8 characters", file=sys.stderr)
        return 2
    print("[[console.users]]")
    print(f'name = "{args.name}"')
    print(f'role = "{args.role}"')
    print(f'password_hash = "{hash_password(password)}"')
    return 0
