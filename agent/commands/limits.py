"""Bounds on what a received command may cost before and while it is parsed.

Invariants:

- :func:`check_nesting` decides in a fixed number of linear C-speed passes (no recursion, no
  per-byte Python loop) whether a JSON text nests deeper than ``max_depth``; a text that passes
  can be decoded by msgspec without reaching its recursion limit.
- :func:`echo` never returns more than ``limit`` characters (plus an ellipsis) and never a lone
  surrogate (a result must always be encodable as UTF-8 JSON).
- The integer bounds here are what the wire shapes (:mod:`agent.commands.wire`) allow: a value
  outside them is rejected (``malformed``/``bad_args``) before anything uses it.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = [
    "ECHO_MAX",
    "ID_ECHO_MAX",
    "MAX_DEPTH",
    "SEQ_MAX",
    "TS_MAX",
    "TokenBucket",
    "check_nesting",
    "echo",
]

MAX_DEPTH: Final = 8  # envelope 1, payload 1, args 2: nothing valid goes deeper than 3
SEQ_MAX: Final = 2**63 - 1  # the store's seqs are SQLite INTEGERs
TS_MAX: Final = 2**53  # ms since the epoch; also exact in a double
ECHO_MAX: Final = 64  # characters of a received field repeated in a result or log line
ID_ECHO_MAX: Final = 128  # a command id (the payload allows 128: uuids are 36)

_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_STRING = re.compile(rb'"[^"]*"')  # after _ESCAPE: a string cannot contain a quote
_PAIR = re.compile(rb"\[\]|\{\}")
_NOT_BRACKET: Final = bytes(b for b in range(256) if b not in b"[]{}")


def check_nesting(raw: bytes, max_depth: int = MAX_DEPTH) -> bool:
    """True when ``raw`` (JSON text) nests arrays/objects at most ``max_depth`` deep.

    Unbalanced brackets also give False (the text is malformed anyway). Cost: a couple of
    ``bytes.count`` when there are few brackets; otherwise ``max_depth + 3`` linear passes.
    """
    if raw.count(b"[") + raw.count(b"{") <= max_depth:
        return True
    # Escapes first, so that the string pattern is linear: no quote is escaped any more.
    text = _STRING.sub(b"", _ESCAPE.sub(b"", raw))
    brackets = text.translate(None, _NOT_BRACKET)
    for _ in range(max_depth):
        if not brackets:
            return True
        brackets = _PAIR.sub(b"", brackets)  # removes every innermost pair: one level
    return not brackets


def echo(value: object, limit: int = ECHO_MAX) -> str:
    """A short, always-encodable prefix of a received value for a result or log line."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) > limit:
        text = text[:limit] + "…"
    return text.encode("utf-8", "replace").decode("utf-8")


class TokenBucket:
    """At most ``rate`` takes per second on average, ``burst`` at once (a monotonic clock in s)."""

    def __init__(self, *, rate: float, burst: float, now: float) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._at = now

    def take(self, now: float) -> bool:
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def wait_s(self, now: float) -> float:
        """Seconds until one token is available (0 when one is)."""
        have = min(self._burst, self._tokens + (now - self._at) * self._rate)
        return max(0.0, (1.0 - have) / self._rate)
