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
from rules.state import Occurrences, StateFormatError, TagState, decode_state

__all__ = [
    "HEADER",
    "ReplayInputError",
    "Trace",
    "TraceRow",
    "dump_state_file",
    "load_rules",
    "load_state_file",
    "parse_trace",
    "replay",
    "replay_with_state",
]

_STATE_FORMAT = "safeedge-rules-state"


class _StateFile(msgspec.Struct, frozen=True, kw_only=True):
    format: str
    version: int
    tags: dict[str, msgspec.Raw]


def load_state_file(data: bytes, file: str) -> dict[str, TagState]:
    """Parse a ``--state`` file (written by :func:`dump_state_file`)."""
    try:
        doc = msgspec.json.decode(data, type=_StateFile)
    except msgspec.DecodeError as exc:
        raise ReplayInputError(file, 0, "state", str(exc)) from exc
    if doc.format != _STATE_FORMAT or doc.version != 1:
        raise ReplayInputError(file, 0, "format", f"not a {_STATE_FORMAT} version 1 file")
    try:
        return {tag: decode_state(bytes(raw), f"tags.{tag}") for tag, raw in doc.tags.items()}
    except StateFormatError as exc:
        raise ReplayInputError(file, 0, "state", str(exc)) from exc


def dump_state_file(states: dict[str, TagState]) -> bytes:
    doc = {"format": _STATE_FORMAT, "version": 1, "tags": states}
    return msgspec.json.format(msgspec.json.encode(doc), indent=1) + b"\n"


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
    return replay_with_state(rules, trace, rules_file, state={})[0]


def replay_with_state(
    rules: Sequence[RuleConfig],
    trace: Trace,
    rules_file: str,
    *,
    state: dict[str, TagState],
) -> tuple[list[JsonEvent], dict[str, TagState]]:
    """Replay starting from ``state`` (as after a restart: timers and windows empty); returns
    the events and the final state of every tag that has an open alarm. A tag of ``state``
    that is neither in the trace nor in a ``tags`` list was removed: each of its open alarms
    emits ``clear`` with ``reason: "config_changed"`` before the first row (at its ts)."""
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
    occ = Occurrences(lambda _tag, _kind, _ts: "")
    start_ts = trace.rows[0].ts_ms if trace.rows else 0
    removed: list[JsonEvent] = []
    for name, tag_state in state.items():
        if name not in index:
            removed.extend(
                {"ts_ms": start_ts, "tag": name, "alarm": kind, "event": "clear", "level": 0,
                 "value": None, "reason": "config_changed"}
                for kind, a in tag_state.alarms.items() if a.open
            )  # fmt: skip
            continue
        try:
            engine.restore_state(index[name], tag_state)
        except ValueError as exc:
            raise ReplayInputError("--state", 0, f"tags.{name}", str(exc)) from exc
        occ.seed(index[name], tag_state)

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
    for e in events:
        occ.note(e)
    final = {}
    for name, k in index.items():
        tag_state = occ.annotate(k, engine.export_state(k))
        if tag_state.alarms:
            final[name] = tag_state
    return removed + [_json(e, names) for e in events], final
