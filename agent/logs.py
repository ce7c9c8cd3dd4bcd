"""Structured, rate-limited logging for the agent; text from outside cannot forge a line.

Lines are ``TIME LEVEL logger event key=value ...``; events name what happened
(``device_lost``), fields carry the data. Nothing is logged per sample: callers log state
changes, and :class:`RateLimiter` folds repeats of one key into a count.

Invariant: a value passed to :func:`kv` never puts a newline, a carriage return, an ANSI
escape, another control character (C0, DEL, C1), a Unicode line/paragraph separator, a
bidirectional override or a lone surrogate into the log: each is written as ``\\xNN`` or
``\\uNNNN`` (and ``\\`` as ``\\\\``), so one call is one line and what follows ``key=`` is the
value, however hostile (command fields, device strings, broker reason strings, topic names).
Messages logged without :func:`kv` (third-party libraries) are escaped the same way by the
formatter. With ``setup_logging(fmt="json")`` every record is one JSON object per line
(``ts``, ``level``, ``logger``, ``event`` and the fields of :func:`kv`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
import time
from collections.abc import Callable
from typing import Final, Literal

__all__ = ["LOG_FORMATS", "KvMessage", "LogFormat", "RateLimiter", "escape", "kv", "setup_logging"]

LOG_FORMATS: Final = ("text", "json")
LogFormat = Literal["text", "json"]

# Control characters, DEL and C1, line/paragraph separators, bidi embeddings/overrides/isolates,
# lone surrogates, and the backslash itself (so that an escape in the output is unambiguous).
_UNSAFE = re.compile("[\\\\\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _escape_one(m: re.Match[str]) -> str:
    c = m.group()
    if c == "\\":
        return "\\\\"
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}"


def escape(text: str) -> str:
    """``text`` with every character that could forge or hide log content escaped."""
    return _UNSAFE.sub(_escape_one, text)


class KvMessage(str):
    """The text of one :func:`kv` line, carrying the event and raw fields for the JSON format."""

    __slots__ = ("event", "fields")
    event: str
    fields: dict[str, object]


def kv(what: str, /, **fields: object) -> KvMessage:
    """Format one structured log message; every value is escaped (see the module docstring)."""
    parts = [escape(what)]
    for key, value in fields.items():
        text = escape(str(value))
        if not text or any(c in text for c in ' ="'):
            text = '"' + text.replace('"', '\\"') + '"'
        parts.append(f"{escape(key)}={text}")
    msg = KvMessage(" ".join(parts))
    msg.event = what
    msg.fields = fields
    return msg


class _TextFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        if not isinstance(record.msg, KvMessage) or record.args:
            record.message = escape(record.message)
        return super().formatMessage(record)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.msg
        ts = dt.datetime.fromtimestamp(record.created, tz=dt.UTC)
        doc: dict[str, object] = {
            "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
        }
        if isinstance(msg, KvMessage) and not record.args:
            doc["event"] = msg.event
            for key, value in msg.fields.items():
                if key not in doc:
                    doc[key] = _json_value(value)
        else:
            doc["message"] = record.getMessage()
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        # ensure_ascii: every control character, ESC and non-ASCII character is a \\u escape.
        return json.dumps(doc, ensure_ascii=True, default=str)


def _json_value(value: object) -> object:
    if value is None or isinstance(value, bool | int | float):
        return value
    return str(value)


def setup_logging(level: str = "INFO", fmt: LogFormat = "text") -> None:
    """Log to stderr at ``level`` in ``fmt`` (``text`` lines or ``json`` objects)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO), handlers=[handler], force=True
    )
    # pymodbus logs every failed (re)connect; the drivers report device_lost/restored once.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


class RateLimiter:
    """Allows one log line per key per ``interval_s``; counts what it suppressed."""

    def __init__(self, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self._interval = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def allow(self, key: str) -> tuple[bool, int]:
        """Return (may log now, how many were suppressed since the last allowed line)."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False, 0
        self._last[key] = now
        return True, self._suppressed.pop(key, 0)
