"""Output of the installer's commands: a rich terminal view, or one JSON document (``--json``).

Every installer command prints either a human view (rich tables, to stdout) or, with
``--json``, exactly one JSON document on stdout and nothing else, so scripts can parse it.
Text that came from outside (device identification strings, broker messages) is shown through
rich's escaping: it can never inject console markup or control sequences.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import msgspec
from rich.console import Console
from rich.markup import escape

__all__ = ["console", "emit_json", "escape", "quiet_pymodbus", "safe"]


def console(*, stderr: bool = False) -> Console:
    """A console on stdout (or stderr), without colour when not a terminal."""
    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def emit_json(doc: Any) -> None:
    """``doc`` (dataclasses, structs, dicts) as one indented JSON document on stdout."""
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(doc), indent=2).decode() + "\n")
    sys.stdout.flush()


def safe(text: object) -> str:
    """Escape rich markup and drop control characters of text from outside."""
    s = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in str(text))
    return escape(s)


def quiet_pymodbus() -> None:
    """pymodbus logs every failed connect ("Failed to connect ... Repeating") on its own: the
    installer's commands report failures themselves, once, in their output."""
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
