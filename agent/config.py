"""The agent's config file: one TOML document parsed once into frozen, typed objects.

Structure (reference for installers: docs/config.md)::

    [gateway]        site, id, data_dir
    [uplink]         MQTT broker, topic prefix, TLS, credentials
    [commands]       trusted Ed25519 keys of the platform for signed downlink commands
    [buffer]         buffer.config.BufferConfig
    [[serial_ports]] drivers.config.SerialPortConfig
    [[devices]]      drivers.config.ModbusTcpDeviceConfig | ModbusRtuDeviceConfig
                     | SerialLineDeviceConfig (by ``driver``)
      [[devices.tags]]
    [[rules]]        rules.config.RuleConfig

Loading has three stages; the first one that fails raises :class:`ConfigError`:

1. TOML syntax: one issue, located by line and column;
2. shape and types, decoded by msgspec with unknown keys rejected: one issue (msgspec stops at
   the first error), translated into the key path with device and tag names;
3. semantic checks across keys and tables (:func:`check_config`): *every* issue at once.

No I/O happens beyond reading the config file itself: referenced files (TLS, password, buffer)
are resolved by :func:`resolved_paths`, never opened or checked here.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import json
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

import msgspec
import msgspec.inspect as mi

from buffer.config import BufferConfig
from drivers.codec import tag_problems as modbus_tag_problems
from drivers.config import (
    ModbusRtuDeviceConfig,
    ModbusTcpDeviceConfig,
    SerialLineDeviceConfig,
    SerialLineTagConfig,
    SerialPortConfig,
    TagConfig,
)
from drivers.devices import poll_group_problems
from drivers.lineproto import config_problems as serial_line_problems
from rules.config import RuleConfig

__all__ = [
    "AgentConfig",
    "CommandsConfig",
    "ConfigError",
    "ConfigIssue",
    "DeviceConfig",
    "GatewayConfig",
    "ReportByExceptionConfig",
    "ResolvedPaths",
    "TlsConfig",
    "UplinkConfig",
    "check_config",
    "load_config",
    "loads_config",
    "resolved_paths",
]

_ID_PATTERN = r"^[A-Za-z0-9_.\-]{1,64}$"
Id = Annotated[str, msgspec.Meta(pattern=_ID_PATTERN)]

DeviceConfig = ModbusTcpDeviceConfig | ModbusRtuDeviceConfig | SerialLineDeviceConfig


class GatewayConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    site: Id
    id: Id
    data_dir: str = "/var/lib/safeedge"  # relative: to the config file's directory


class TlsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    ca_file: str
    cert_file: str | None = None  # cert_file and key_file: both or neither
    key_file: str | None = None


class ReportByExceptionConfig(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True
):
    """``[uplink.report_by_exception]``: present = telemetry is reported by exception
    (agent/telemetry.py): a tag's sample is sent when its quality changes, its value moves by
    more than its deadband, or ``integrity_s`` passed since it was last sent."""

    deadband: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    deadbands: dict[str, Annotated[float, msgspec.Meta(ge=0)]] = {}
    integrity_s: Annotated[float, msgspec.Meta(gt=0, le=86400)] = 300.0


class UplinkConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 1883
    prefix: str = "safeedge/v1"
    protocol: Literal["mqtt5", "mqtt311"] = "mqtt5"
    client_id: str | None = None  # default "safeedge-{site}-{gateway}"
    keepalive_s: Annotated[int, msgspec.Meta(ge=5, le=3600)] = 30
    username: str | None = None
    password_file: str | None = None
    tls: TlsConfig | None = None
    backfill_after_s: Annotated[float, msgspec.Meta(ge=0)] = 10.0
    max_inflight: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 100
    telemetry_batch: Annotated[int, msgspec.Meta(ge=1, le=10000)] = 200
    telemetry_max_bytes: Annotated[int, msgspec.Meta(ge=1024, le=16_777_216)] = 65536
    telemetry_linger_ms: Annotated[int, msgspec.Meta(ge=0, le=60_000)] = 0
    drain_rate: Annotated[float, msgspec.Meta(ge=0)] = 0.0  # backfill messages/s; 0: unlimited
    report_by_exception: ReportByExceptionConfig | None = None
    reconnect_min_s: Annotated[float, msgspec.Meta(gt=0)] = 0.5
    reconnect_max_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0


class CommandsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Signed downlink commands (design/UPLINK.md, docs/uplink.md).

    ``trusted_keys`` maps a key id (the command's ``kid``) to the base64 of a raw 32-byte
    Ed25519 public key (``safeedge sign-command keygen`` prints it). With no key every command
    is rejected (``unknown_key``). ``seen_ids_max`` bounds the persisted replay store;
    ``max_resend`` bounds the records one ``resend`` command may republish.
    """

    enabled: bool = True
    trusted_keys: dict[Id, str] = {}
    seen_ids_max: Annotated[int, msgspec.Meta(ge=100, le=1_000_000)] = 10_000
    max_resend: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 10_000


class AgentConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    gateway: GatewayConfig
    uplink: UplinkConfig = UplinkConfig()
    commands: CommandsConfig = CommandsConfig()
    buffer: BufferConfig = BufferConfig()
    serial_ports: tuple[SerialPortConfig, ...] = ()
    devices: tuple[DeviceConfig, ...] = ()
    rules: tuple[RuleConfig, ...] = ()


# ---------------------------------------------------------------------------------------------
# Errors


class ConfigIssue(NamedTuple):
    """One problem in a config file.

    ``path`` is the key path with names where known, e.g.
    ``devices[2] "plc-1".tags[0] "GT-101".address``; for a TOML syntax error it is
    ``line L, column C``; it is empty when the problem is the file as a whole.
    """

    path: str
    message: str
    hint: str


class ConfigError(Exception):
    """The config needs a human to fix it (never transient; the agent exits 78, EX_CONFIG).

    Carries ``source`` (the file name, or ``<string>``) and ``issues`` (never empty).
    ``str()`` gives one line per issue: ``FILE: PATH: MESSAGE (hint: HINT)``.
    """

    def __init__(self, source: str, issues: Sequence[ConfigIssue]) -> None:
        if not issues:
            raise ValueError("ConfigError needs at least one issue")
        self.source = source
        self.issues = list(issues)
        super().__init__(source, self.issues)

    def __str__(self) -> str:
        return "\n".join(_format_issue(self.source, issue) for issue in self.issues)


def _format_issue(source: str, issue: ConfigIssue) -> str:
    parts = [source]
    if issue.path:
        parts.append(issue.path)
    parts.append(issue.message)
    line = ": ".join(parts)
    return f"{line} (hint: {issue.hint})" if issue.hint else line


# ---------------------------------------------------------------------------------------------
# Loading


def load_config(path: str | Path) -> AgentConfig:
    """Read and validate the config file at ``path``; raises :class:`ConfigError`.

    An unreadable or missing file, or a file that is not UTF-8, is a ConfigError too (it needs
    a human), chained to the OS error. A UTF-8 byte-order mark is accepted.
    """
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        issue = ConfigIssue(
            "", f"cannot read the config file: {reason}", "check the path and its permissions"
        )
        raise ConfigError(source, [issue]) from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        issue = ConfigIssue(f"line {line}", "the file is not UTF-8 text", "save it as UTF-8")
        raise ConfigError(source, [issue]) from exc
    return loads_config(text, source=source)


def loads_config(text: str, *, source: str = "<string>") -> AgentConfig:
    """Parse and validate a config document; raises :class:`ConfigError`, never returns None.

    ``source`` names the document in error messages.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [_syntax_issue(str(exc), text)]) from exc
    try:
        cfg = msgspec.convert(raw, AgentConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(source, [_validation_issue(str(exc), raw)]) from exc
    issues = check_config(cfg)
    if issues:
        raise ConfigError(source, issues)
    return cfg


_SYNTAX_AT = re.compile(r"^(?P<msg>.*?)\s*\(at line (?P<line>\d+), column (?P<col>\d+)\)$")
_SYNTAX_HINTS = {
    "Invalid value": 'text values need double quotes, e.g. host = "10.0.0.5"',
    "Cannot overwrite a value": "a key or table is defined twice",
    "Cannot declare": "a table is declared twice (use [[...]] for repeated tables)",
    "Expected '=' after a key in a key/value pair": "write key = value, one per line",
    "Unclosed array": "close the array with ]",
    "Unterminated string": "close the string with a matching quote",
}


def _syntax_issue(message: str, text: str) -> ConfigIssue:
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


# ---------------------------------------------------------------------------------------------
# Decoding errors: msgspec's "<message> - at `$.a[0].b`" into a ConfigIssue with a named path

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


def _validation_issue(message: str, raw: dict[str, Any]) -> ConfigIssue:
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
        if t.pattern == _ID_PATTERN:
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


# ---------------------------------------------------------------------------------------------
# Semantic checks

_REGISTERS = {
    "bool": 1,
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "int64": 4,
    "uint64": 4,
    "float64": 4,
}
_BIT_TABLES = ("coil", "discrete")


def check_config(cfg: AgentConfig) -> list[ConfigIssue]:
    """Every cross-key and cross-table problem of a decoded config (no I/O), ordered by table
    as the reference file is: uplink, serial ports, devices, rules.

    Checked: unique device names, globally unique tag names, unique serial port names and
    paths, known serial ports, unique unit ids per bus / TCP endpoint, register addresses,
    table/type agreement, tag ranges, device timeouts, devices without tags, uplink TLS and
    credential pairs, reconnect bounds, and the rules (:func:`rules.check_rules`).
    """
    issues = _uplink_issues(cfg.uplink)
    issues += _commands_issues(cfg.commands)
    issues += _port_issues(cfg.serial_ports)
    issues += _device_issues(cfg)
    rbe = cfg.uplink.report_by_exception
    if rbe is not None:
        known = {t.name for d in cfg.devices for t in d.tags}
        for name in rbe.deadbands:
            if name not in known:
                close = difflib.get_close_matches(name, sorted(known), n=1)
                hint = f'did you mean "{close[0]}"?' if close else "use a configured tag name"
                path = f"uplink.report_by_exception.deadbands.{name}"
                issues.append(ConfigIssue(path, "unknown tag", hint))
    if cfg.rules:
        tag_names = list(dict.fromkeys(t.name for d in cfg.devices for t in d.tags))
        issues += _rule_issues(cfg.rules, tag_names)
    return issues


def _port_path(i: int, port: SerialPortConfig) -> str:
    return f'serial_ports[{i}] "{port.name}"'


def _device_path(i: int, device: DeviceConfig) -> str:
    return f'devices[{i}] "{device.name}"'


def _port_issues(ports: Sequence[SerialPortConfig]) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    names: dict[str, str] = {}
    paths: dict[str, str] = {}
    for i, port in enumerate(ports):
        here = _port_path(i, port)
        if port.name in names:
            msg = f'duplicate serial port name "{port.name}"'
            issues.append(ConfigIssue(f"{here}.name", msg, f"already used by {names[port.name]}"))
        else:
            names[port.name] = here
        if port.path in paths:
            issues.append(
                ConfigIssue(
                    f"{here}.path",
                    f'serial port path "{port.path}" is already used by {paths[port.path]}',
                    "one physical bus has one owner: put every device on that line under one "
                    "[[serial_ports]] entry and refer to it by name",
                )
            )
        else:
            paths[port.path] = here
    return issues


def _device_issues(cfg: AgentConfig) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    port_names = [p.name for p in cfg.serial_ports]
    device_names: dict[str, str] = {}
    tag_names: dict[str, str] = {}
    endpoints: dict[tuple[str, int, int], str] = {}
    bus_units: dict[tuple[str, int], str] = {}
    port_users: dict[str, list[tuple[str, DeviceConfig]]] = {}
    for i, device in enumerate(cfg.devices):
        here = _device_path(i, device)
        if device.name in device_names:
            msg = f'duplicate device name "{device.name}"'
            hint = f"already used by {device_names[device.name]}; device names must be unique"
            issues.append(ConfigIssue(f"{here}.name", msg, hint))
        else:
            device_names[device.name] = here
        if isinstance(device, ModbusTcpDeviceConfig):
            endpoint = (device.host.lower(), device.port, device.unit_id)
            if endpoint in endpoints:
                where = f"{device.host}:{device.port}"
                msg = (
                    f"unit id {device.unit_id} at {where} is already used by {endpoints[endpoint]}"
                )
                hint = "one device per (host, port, unit_id): merge their tags into one device"
                issues.append(ConfigIssue(f"{here}.unit_id", msg, hint))
            else:
                endpoints[endpoint] = here
        elif device.serial_port not in port_names:
            issues.append(_unknown_port(here, device.serial_port, port_names))
        else:
            port_users.setdefault(device.serial_port, []).append((here, device))
            if isinstance(device, ModbusRtuDeviceConfig):
                unit = (device.serial_port, device.unit_id)
                if unit in bus_units:
                    msg = (
                        f'unit id {device.unit_id} on serial port "{device.serial_port}" '
                        f"is already used by {bus_units[unit]}"
                    )
                    hint = "every device on one bus needs its own unit id (set on the device)"
                    issues.append(ConfigIssue(f"{here}.unit_id", msg, hint))
                else:
                    bus_units[unit] = here
        if device.timeout_s > device.poll_interval_s:
            issues.append(
                ConfigIssue(
                    f"{here}.timeout_s",
                    f"timeout_s {device.timeout_s:g} is longer than poll_interval_s "
                    f"{device.poll_interval_s:g}",
                    "a dead device may only cost its own poll period: "
                    "make timeout_s at most poll_interval_s",
                )
            )
        if not device.tags:
            hint = "add [[devices.tags]] tables under this device, or remove the device"
            issues.append(ConfigIssue(f"{here}.tags", "device has no tags", hint))
        if isinstance(device, SerialLineDeviceConfig):
            issues += [ConfigIssue(f"{here}.{k}", m, h) for k, m, h in serial_line_problems(device)]
        else:
            issues += _exclude_issues(here, device)
            issues += [ConfigIssue(f"{here}.{k}", m, h) for k, m, h in poll_group_problems(device)]
        tags: Sequence[TagConfig | SerialLineTagConfig] = device.tags
        for j, tag in enumerate(tags):
            tag_path = f'{here}.tags[{j}] "{tag.name}"'
            if tag.name in tag_names:
                msg = f'duplicate tag name "{tag.name}"'
                hint = f"already used by {tag_names[tag.name]}; tag names are global to the gateway"
                issues.append(ConfigIssue(f"{tag_path}.name", msg, hint))
            else:
                tag_names[tag.name] = tag_path
            if isinstance(device, SerialLineDeviceConfig):
                issues += _range_issues(tag_path, tag.range)
            else:
                issues += _tag_issues(tag_path, tag)
    issues += _exclusive_port_issues(port_users)
    return issues


def _exclusive_port_issues(
    port_users: dict[str, list[tuple[str, DeviceConfig]]],
) -> list[ConfigIssue]:
    """A serial-line device owns its port: no other device may use it."""
    issues: list[ConfigIssue] = []
    for port, users in port_users.items():
        owner = next((u for u in users if isinstance(u[1], SerialLineDeviceConfig)), None)
        if owner is None or len(users) == 1:
            continue
        for here, _device in users:
            if here != owner[0]:
                msg = f'serial port "{port}" is owned by the serial-line device {owner[0]}'
                hint = (
                    "a serial_line device needs its port for itself: give this device another "
                    "[[serial_ports]] entry (another physical line)"
                )
                issues.append(ConfigIssue(f"{here}.serial_port", msg, hint))
    return issues


def _exclude_issues(
    here: str, device: ModbusTcpDeviceConfig | ModbusRtuDeviceConfig
) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    for k, ex in enumerate(device.exclude):
        if ex.address + ex.count > 65536:
            msg = f"exclude {ex.address}+{ex.count} runs past the last address 65535"
            hint = f"count may be at most {65536 - ex.address} here"
            issues.append(ConfigIssue(f"{here}.exclude[{k}].count", msg, hint))
    return issues


def _range_issues(tag_path: str, bounds: tuple[float, float] | None) -> list[ConfigIssue]:
    if bounds is None or bounds[0] < bounds[1]:
        return []
    low, high = bounds
    msg = f"range [{low:g}, {high:g}]: min must be less than max"
    hint = "write range = [min, max], e.g. [0, 100] for 0-100 %LEL"
    return [ConfigIssue(f"{tag_path}.range", msg, hint)]


def _unknown_port(here: str, name: str, known: Sequence[str]) -> ConfigIssue:
    if known:
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        listed = ", ".join(json.dumps(k) for k in known)
        hint = f'did you mean "{close[0]}"? ' if close else ""
        hint += f"known serial ports: {listed}"
    else:
        hint = f'no [[serial_ports]] are configured: add one with name = "{name}"'
    return ConfigIssue(f"{here}.serial_port", f'unknown serial port "{name}"', hint)


def _tag_issues(tag_path: str, tag: Any) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    if tag.table in _BIT_TABLES and tag.type != "bool":
        msg = f'{tag.table} tables hold single bits: type "{tag.type}" cannot be read from them'
        hint = 'set type = "bool", or read the value from table = "holding" or "input"'
        issues.append(ConfigIssue(f"{tag_path}.type", msg, hint))
    count = _REGISTERS[tag.type] if tag.table not in _BIT_TABLES else 1
    if tag.address + count > 65536:
        unit = "register" if tag.table not in _BIT_TABLES else "bit"
        msg = (
            f"{tag.type} at address {tag.address} needs {count} {unit}{'s' if count > 1 else ''} "
            "and runs past the last address 65535"
        )
        hint = f"the highest address for {tag.type} is {65536 - count}"
        issues.append(ConfigIssue(f"{tag_path}.address", msg, hint))
    if tag.range is not None and tag.range[0] >= tag.range[1]:
        low, high = tag.range
        msg = f"range [{low:g}, {high:g}]: min must be less than max"
        hint = "write range = [min, max], e.g. [0, 100] for 0-100 %LEL"
        issues.append(ConfigIssue(f"{tag_path}.range", msg, hint))
    issues += [ConfigIssue(f"{tag_path}.{k}", m, h) for k, m, h in modbus_tag_problems(tag)]
    return issues


def _uplink_issues(uplink: UplinkConfig) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    tls = uplink.tls
    if tls is not None and (tls.cert_file is None) != (tls.key_file is None):
        given, absent = (
            ("cert_file", "key_file") if tls.key_file is None else ("key_file", "cert_file")
        )
        msg = f"{given} is set without {absent}"
        hint = f"a client certificate needs both files: add {absent}, or remove {given}"
        issues.append(ConfigIssue(f"uplink.tls.{given}", msg, hint))
    if uplink.password_file is not None and uplink.username is None:
        msg = "password_file is set without username"
        hint = 'add username = "..." (the broker user), or remove password_file'
        issues.append(ConfigIssue("uplink.password_file", msg, hint))
    if uplink.reconnect_min_s > uplink.reconnect_max_s:
        msg = (
            f"reconnect_min_s {uplink.reconnect_min_s:g} is larger than reconnect_max_s "
            f"{uplink.reconnect_max_s:g}"
        )
        hint = "the back-off starts at reconnect_min_s and grows up to reconnect_max_s"
        issues.append(ConfigIssue("uplink.reconnect_min_s", msg, hint))
    return issues


def _commands_issues(commands: CommandsConfig) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    for kid, text in commands.trusted_keys.items():
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            msg = "not the base64 of a 32-byte Ed25519 public key"
            hint = "paste the public key printed by `safeedge sign-command keygen` (44 characters)"
            issues.append(ConfigIssue(f"commands.trusted_keys.{kid}", msg, hint))
    return issues


def _rule_issues(rule_tables: Sequence[RuleConfig], tag_names: Sequence[str]) -> list[ConfigIssue]:
    # Imported here: the rules package loads numba, which a config without rules does not need.
    from rules import check_rules

    return [ConfigIssue(i.path, i.message, i.hint) for i in check_rules(rule_tables, tag_names)]


# ---------------------------------------------------------------------------------------------
# Paths


@dataclass(frozen=True, slots=True)
class ResolvedPaths:
    """Absolute file locations of a config; None where a file is not configured.

    Rules: ``gateway.data_dir`` is relative to the config file's directory; ``buffer.path`` and
    ``buffer.key_file`` are relative to ``data_dir``; the TLS files and ``password_file`` are
    relative to the config file's directory. Absolute paths are kept; ``~`` is not expanded.
    """

    data_dir: Path
    buffer_path: Path
    buffer_key_file: Path
    ca_file: Path | None
    cert_file: Path | None
    tls_key_file: Path | None
    password_file: Path | None


def resolved_paths(cfg: AgentConfig, config_path: Path) -> ResolvedPaths:
    """Resolve every file of ``cfg`` (loaded from ``config_path``) by the rules above; no I/O
    besides reading the working directory when ``config_path`` is relative."""
    base = Path(config_path).absolute().parent
    data_dir = base / cfg.gateway.data_dir
    tls = cfg.uplink.tls

    def beside_config(name: str | None) -> Path | None:
        return None if name is None else base / name

    return ResolvedPaths(
        data_dir=data_dir,
        buffer_path=data_dir / cfg.buffer.path,
        buffer_key_file=data_dir / cfg.buffer.key_file,
        ca_file=beside_config(tls.ca_file if tls else None),
        cert_file=beside_config(tls.cert_file if tls else None),
        tls_key_file=beside_config(tls.key_file if tls else None),
        password_file=beside_config(cfg.uplink.password_file),
    )
