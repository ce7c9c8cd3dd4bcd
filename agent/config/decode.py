"""Translating parser errors into located issues: TOML syntax errors (line and column) and
msgspec's decoding errors (``<message> - at `$.a[0].b```) into key paths with device and tag
names, with a hint that says what was expected. Pure functions of the error text and the raw
TOML tree.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Sequence
from typing import Any

import msgspec.inspect as mi

from agent.config.issues import ConfigIssue
from agent.config.schema import ID_PATTERN, AgentConfig

__all__ = ["render_path", "syntax_issue", "validation_issue"]

_SYNTAX_AT = re.compile(r"^(?P<msg>.*?)\s*\(at line (?P<line>\d+), column (?P<col>\d+)\)$")
_SYNTAX_HINTS = {
    "Invalid value": 'text values need double quotes, e.g. host = "10.0.0.5"',
    "Cannot overwrite a value": "a key or table is defined twice",
    "Cannot declare": "a table is declared twice (use [[...]] for repeated tables)",
    "Expected '=' after a key in a key/value pair": "write key = value, one per line",
    "Unclosed array": "close the array with ]",
    "Unterminated string": "close the string with a matching quote",
}


def syntax_issue(message: str, text: str) -> ConfigIssue:
    """Translate a ``tomllib`` error (it carries no line attribute on 3.11: parse its text)."""
    match = _SYNTAX_AT.match(message)
    if match is None:
        msg = message.removesuffix(" (at end of document)")
        return ConfigIssue("end of file", f"invalid TOML: {msg}", "check the last lines")
    line_no = int(match["line"])
    msg = match["msg"]
    hint = next((h for k, h in _SYNTAX_HINTS.items() if msg.startswith(k)), "")
    lines = text.splitlines()
    if 0 < line_no <= len(lines):
        shown = lines[line_no - 1].strip()
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        hint = f"{hint}; the line reads: {shown}" if hint else f"the line reads: {shown}"
    return ConfigIssue(f"line {line_no}, column {match['col']}", f"invalid TOML: {msg}", hint)


_AT = re.compile(r"^(?P<msg>.*) - at `\$(?P<path>.*)`$", re.DOTALL)
_SEGMENT = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<key>.*)`$", re.DOTALL)
_MISSING = re.compile(r"^Object missing required field `(?P<key>.*)`$")
_TYPE_WORDS = {
    "object": "table",
    "array": "array",
    "str": "string",
    "int": "integer",
    "float": "number",
    "bool": "boolean",
    "null": "nothing",
    "datetime": "date-time",
    "date": "date",
    "time": "time",
}
_ROOT = mi.type_info(AgentConfig)
_MISSING_VALUE = object()


def validation_issue(message: str, raw: dict[str, Any]) -> ConfigIssue:
    match = _AT.match(message)
    msg, segments = (match["msg"], _segments(match["path"])) if match else (message, [])
    if unknown := _UNKNOWN.match(msg):
        key = unknown["key"]
        names = _keys_at(segments, raw)
        close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
        hint = f'did you mean "{close[0]}"?' if close else "valid keys: " + ", ".join(names)
        owner = next(
            (k for k in range(len(segments) - 1, -1, -1) if key in _keys_at(segments[:k], raw)),
            None,
        )
        if owner is not None:
            where = _render(segments[:owner], raw) or "the top level"
            hint = (
                f'"{key}" is a key of {where}: TOML puts every key written after a table header '
                "into that table, so move it above that header"
            )
        return ConfigIssue(_render(segments, raw, extra=key), "unknown key", hint)
    if missing := _MISSING.match(msg):
        segments = [*segments, missing["key"]]
        return _missing_issue(segments, raw)
    expected = _type_at(segments, raw)
    value = _value_at(segments, raw)
    found = _toml_value(value) if _is_scalar(value) else None
    if msg.startswith(("Invalid value", "Invalid enum value")) or "matching regex" in msg:
        text = f"invalid value {found}" if found else "invalid value"
    else:
        text = msg.replace("Expected", "expected").replace("got `float`", "got a decimal number")
        text = re.sub(r"`(\w+)`", lambda m: _TYPE_WORDS.get(m[1], m[1]), text)
        text = f"{text} (found {found})" if found else text
    hint = f"expected {_describe(expected)}" if expected is not None else ""
    return ConfigIssue(_render(segments, raw), text, hint)


def _missing_issue(segments: list[str | int], raw: dict[str, Any]) -> ConfigIssue:
    expected = _type_at(segments, raw)
    table = _unwrap(expected, None) if expected is not None else None
    if isinstance(table, mi.StructType):
        required = ", ".join(f.encode_name for f in table.fields if f.required)
        hint = f"add a [{_render(segments, raw)}] table"
        hint += f" with {required}" if required else ""
        return ConfigIssue(_render(segments, raw), "missing required table", hint)
    hint = f"add it: expected {_describe(expected)}" if expected is not None else "add it"
    return ConfigIssue(_render(segments, raw), "missing required key", hint)


def _segments(path: str) -> list[str | int]:
    return [m[1] if m[1] is not None else int(m[2]) for m in _SEGMENT.finditer(path)]


def _render(segments: Sequence[str | int], raw: Any, extra: str | None = None) -> str:
    """``devices[2] "plc-1".tags[0] "GT-101".address``: names added where the table has one."""
    out = ""
    node = raw
    for seg in [*segments, *([extra] if extra is not None else [])]:
        if isinstance(seg, int):
            out += f"[{seg}]"
            node = node[seg] if isinstance(node, list) and seg < len(node) else None
            name = node.get("name") if isinstance(node, dict) else None
            if isinstance(name, str):
                out += f" {json.dumps(name, ensure_ascii=False)}"
        else:
            key = seg if re.fullmatch(r"[A-Za-z0-9_-]+", seg) else json.dumps(seg)
            out += f".{key}" if out else key
            node = node.get(seg) if isinstance(node, dict) else None
    return out


def _value_at(segments: Sequence[str | int], raw: Any) -> Any:
    node = raw
    for seg in segments:
        in_list = isinstance(seg, int) and isinstance(node, list) and seg < len(node)
        if in_list or (isinstance(seg, str) and isinstance(node, dict) and seg in node):
            node = node[seg]
        else:
            return _MISSING_VALUE
    return node


def _unwrap(t: mi.Type, value: Any) -> mi.Type:
    """Strip metadata and ``| None``; pick the tagged-union member that ``value`` selects."""
    while True:
        if isinstance(t, mi.Metadata):
            t = t.type
            continue
        if isinstance(t, mi.UnionType):
            members = [m for m in t.types if not isinstance(m, mi.NoneType)]
            structs = [m for m in members if isinstance(m, mi.StructType)]
            if len(members) == 1:
                t = members[0]
                continue
            if structs and len(structs) == len(members) and isinstance(value, dict):
                tag_field = structs[0].tag_field
                chosen = [m for m in structs if tag_field and value.get(tag_field) == m.tag]
                if chosen:
                    return chosen[0]
        return t


def _type_at(segments: Sequence[str | int], raw: Any) -> mi.Type | None:
    t: mi.Type = _ROOT
    node = raw
    for seg in segments:
        t = _unwrap(t, node)
        node = _value_at([seg], node)
        if isinstance(seg, int):
            if isinstance(t, mi.VarTupleType):
                t = t.item_type
            elif isinstance(t, mi.TupleType) and seg < len(t.item_types):
                t = t.item_types[seg]
            else:
                return None
            continue
        structs = _structs(t)
        if structs and seg == structs[0].tag_field:
            return mi.LiteralType(tuple(s.tag for s in structs if s.tag is not None))
        fields = [f for s in structs for f in s.fields if f.encode_name == seg]
        if not fields:
            return None
        t = fields[0].type
    return t


def _structs(t: mi.Type) -> list[mi.StructType]:
    if isinstance(t, mi.StructType):
        return [t]
    if isinstance(t, mi.UnionType):
        return [m for m in t.types if isinstance(m, mi.StructType)]
    return []


def _keys_at(segments: Sequence[str | int], raw: Any) -> list[str]:
    t = _type_at(segments, raw)
    structs = _structs(_unwrap(t, _value_at(segments, raw))) if t is not None else []
    names = [f.encode_name for s in structs for f in s.fields]
    names += [s.tag_field for s in structs[:1] if s.tag_field]
    return sorted(set(names))


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


def _toml_value(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if isinstance(value, str | bool) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _describe(t: mi.Type | None) -> str:
    """The expected TOML value of a type, for hints: ``an integer from 1 to 65535``."""
    t = _unwrap(t, None) if t is not None else None
    if isinstance(t, mi.UnionType):
        structs = _structs(t)
        if structs and structs[0].tag_field:
            tags = ", ".join(json.dumps(s.tag) for s in structs)
            return f"a table with {structs[0].tag_field} = one of {tags}"
        return " or ".join(_describe(m) for m in t.types if not isinstance(m, mi.NoneType))
    if isinstance(t, mi.StructType):
        return "a table"
    if isinstance(t, mi.VarTupleType):
        item = _unwrap(t.item_type, None)
        return "an array of tables" if _structs(item) else f"an array of {_plural(item)}"
    if isinstance(t, mi.TupleType):
        return f"an array of {len(t.item_types)} {_plural(t.item_types[0])}"
    if isinstance(t, mi.LiteralType):
        return "one of " + ", ".join(json.dumps(v) for v in t.values)
    if isinstance(t, mi.StrType):
        if t.pattern == ID_PATTERN:
            return "a name of 1 to 64 characters from A-Z a-z 0-9 _ . -"
        return f"a string matching {t.pattern}" if t.pattern else "a string"
    if isinstance(t, mi.BoolType):
        return "true or false"
    if isinstance(t, mi.IntType | mi.FloatType):
        word = "an integer" if isinstance(t, mi.IntType) else "a number"
        if t.ge is not None and t.le is not None:
            return f"{word} from {t.ge:g} to {t.le:g}"
        pairs = ((">", t.gt), (">=", t.ge), ("<", t.lt), ("<=", t.le))
        return " ".join([word, *(f"{op} {v:g}" for op, v in pairs if v is not None)])
    return "a value of another type"


def _plural(t: mi.Type) -> str:
    t = _unwrap(t, None)
    if isinstance(t, mi.StrType):
        return "strings"
    if isinstance(t, mi.IntType):
        return "integers"
    return "numbers" if isinstance(t, mi.FloatType) else "values"


def render_path(segments: Sequence[str | int], raw: Any) -> str:
    """The key path of ``segments`` in the raw TOML tree, with names: ``devices[2] "plc-1"``."""
    return _render(segments, raw)
