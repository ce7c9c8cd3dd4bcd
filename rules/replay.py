"""``safeedge rules replay``: pure logic (text in, event dicts out; the CLI does the I/O).

Contract: the end of design/RULES.md.

- Rules text: a TOML document of ``[[rules]]`` tables exactly as in the agent's config; any
  other top-level key is an error.
- Trace text: CSV with the header ``ts_ms,tag,value,quality``; ``quality`` is ``good`` (or
  empty), ``bad`` or ``ack``. A good row needs a number (``nan``/``inf`` are numbers and make a
  ``fault``); bad and ack rows may leave ``value`` empty. A tag's rows (acks included) must not
  go back in time.
- The tag table is the trace's tags in order of first appearance, followed by tags that
  ``tags = [...]`` lists name but the trace never mentions (so a shared rules file works for a
  partial trace); a ``match`` glob must still match a tag of the trace.
- Every problem raises :class:`ReplayInputError` naming file, line and field, before any event
  is produced, so the caller can print nothing on stdout.
"""

from __future__ import annotations

import csv
import io
import math
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
import numpy as np

from rules.config import RuleConfig
from rules.engine import RuleEngine
from rules.events import AlarmEvent
from rules.params import RuleConfigError

__all__ = ["HEADER", "ReplayInputError", "Trace", "TraceRow", "load_rules", "parse_trace", "replay"]

HEADER = ("ts_ms", "tag", "value", "quality")
_QUALITIES = {"": "good", "good": "good", "bad": "bad", "ack": "ack"}

JsonEvent = dict[str, str | int | float | None]


class ReplayInputError(Exception):
    """Bad input (needs a human): ``file``, ``line`` (1-based, 0 when not known), ``field``."""

    def __init__(self, file: str, line: int, field: str, message: str) -> None:
        self.file, self.line, self.field = file, line, field
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {field}: {message}")


class _RulesDoc(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    rules: tuple[RuleConfig, ...] = ()


def load_rules(text: str, file: str) -> list[RuleConfig]:
    """Parse the ``[[rules]]`` tables of a TOML document."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"at line (\d+)", str(exc))
        raise ReplayInputError(file, int(found[1]) if found else 0, "toml", str(exc)) from exc
    try:
        return list(msgspec.convert(doc, _RulesDoc).rules)
    except msgspec.ValidationError as exc:
        # msgspec names the path ($.rules[0].high); TOML line numbers are gone after parsing
        raise ReplayInputError(file, 0, "rules", str(exc)) from exc


@dataclass(frozen=True, slots=True)
class TraceRow:
    line: int
    ts_ms: int
    tag: str
    value: float
    quality: str  # good | bad | ack


@dataclass(frozen=True, slots=True)
class Trace:
    rows: list[TraceRow]
    tags: list[str]  # order of first appearance


def parse_trace(text: str, file: str) -> Trace:
    """Parse and check a trace CSV; raises :class:`ReplayInputError` on the first bad field."""
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None or tuple(h.strip() for h in header) != HEADER:
        raise ReplayInputError(file, 1, "header", f"expected {','.join(HEADER)}, got {header}")
    rows: list[TraceRow] = []
    last: dict[str, int] = {}
    for fields in reader:
        line = reader.line_num
        if not fields or fields == [""]:
            continue
        if len(fields) != len(HEADER):
            raise ReplayInputError(file, line, "row", f"expected 4 fields, got {len(fields)}")
        ts_s, tag, value_s, quality_s = (f.strip() for f in fields)
        try:
            ts = int(ts_s)
        except ValueError as exc:
            raise ReplayInputError(file, line, "ts_ms", f"{ts_s!r} is not an integer") from exc
        if not tag:
            raise ReplayInputError(file, line, "tag", "empty tag name")
        quality = _QUALITIES.get(quality_s.lower())
        if quality is None:
            raise ReplayInputError(
                file, line, "quality", f"{quality_s!r} is not good, bad, ack or empty"
            )
        if value_s == "" and quality != "good":
            value = math.nan
        else:
            try:
                value = float(value_s)
            except ValueError as exc:
                raise ReplayInputError(file, line, "value", f"{value_s!r} is not a number") from exc
        if tag in last and ts < last[tag]:
            raise ReplayInputError(
                file, line, "ts_ms", f"{ts} goes back in time for tag {tag!r} (was {last[tag]})"
            )
        last[tag] = ts
        rows.append(TraceRow(line, ts, tag, value, quality))
    return Trace(rows=rows, tags=list(last))


def _json(event: AlarmEvent, names: Sequence[str]) -> JsonEvent:
    out: JsonEvent = {
        "ts_ms": event.ts_ms,
        "tag": names[event.tag],
        "alarm": event.alarm,
        "event": event.event,
        "level": event.level,
        "value": event.value,
    }
    out.update(event.extra)
    return out


def replay(rules: Sequence[RuleConfig], trace: Trace, rules_file: str) -> list[JsonEvent]:
    """Run the trace through a fresh engine; events as JSON-ready dicts in processing order."""
    names = list(trace.tags)
    for rule in rules:
        names.extend(t for t in rule.tags or () if t not in names)
    try:
        engine = RuleEngine(names, rules)
    except RuleConfigError as exc:
        listed = "; ".join(f"{i.path}: {i.message} (hint: {i.hint})" for i in exc.issues)
        raise ReplayInputError(rules_file, 0, "rules", listed) from exc
    index = {n: k for k, n in enumerate(names)}
    events: list[AlarmEvent] = []
    batch: list[TraceRow] = []

    def flush() -> None:
        if batch:
            events.extend(
                engine.evaluate(
                    np.array([index[r.tag] for r in batch], dtype=np.int32),
                    np.array([r.ts_ms for r in batch], dtype=np.int64),
                    np.array([r.value for r in batch], dtype=np.float64),
                    np.array([0 if r.quality == "good" else 1 for r in batch], dtype=np.uint8),
                )
            )
            batch.clear()

    for row in trace.rows:
        if row.quality == "ack":
            flush()
            events.extend(engine.acknowledge(index[row.tag], row.ts_ms))
        else:
            batch.append(row)
    flush()
    return [_json(e, names) for e in events]
