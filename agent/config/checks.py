"""The config check: the leaves' own checks composed, plus the checks that span sections.

Each leaf owns its section (:func:`drivers.config.device_issues` and
:func:`~drivers.config.port_issues`, :func:`buffer.config.buffer_issues`,
:func:`rules.check_rules`); their ``(path, message, hint)`` issues are put under the key path of
the table they were given (:func:`agent.config.issues.adapt`). The agent adds what no leaf can
see: unique device, tag and serial port names, unknown serial ports, one unit id per bus or TCP
endpoint, one framing per TCP endpoint, a serial-line device owning its port, the tag names that
rules and report-by-exception deadbands refer to, the alarm outputs' devices, addresses and
selections, and its own sections (``[uplink]``, ``[commands]``).

Invariant: every check that building a component makes at run time (``drivers.build_devices``,
``RuleEngine``, ``buffer.Store.open``'s arguments, ``Uplink``'s topic root) is made here, so a
config this accepts builds (tests/agent/test_config_mutants.py checks it). No I/O, and numba is
not imported (``rules`` loads its kernels only with ``RuleEngine``).
"""

from __future__ import annotations

import base64
import binascii
import difflib
import fnmatch
import json
import math
from collections.abc import Mapping, Sequence

from agent.codec import root_topic
from agent.config.governance import governance_issues
from agent.config.issues import ConfigIssue, adapt
from agent.config.schema import (
    AgentConfig,
    AlarmOutputConfig,
    CommandsConfig,
    DeviceConfig,
    UplinkConfig,
)
from agent.console.config import console_issues
from agent.review.config import review_issues
from buffer.config import buffer_issues
from drivers.config import (
    ModbusRtuDeviceConfig,
    ModbusTcpDeviceConfig,
    SerialLineDeviceConfig,
    SerialLineTagConfig,
    SerialPortConfig,
    TagConfig,
    device_issues,
    port_issues,
)
from drivers.outputs import output_problems
from rules import check_rules

__all__ = ["UPLINK_BOUNDS", "check_config", "selection_problems"]

UPLINK_BOUNDS: dict[str, tuple[float, float]] = {
    "backfill_after_s": (0.0, 86400.0),
    "drain_rate": (0.0, 1e6),
    "reconnect_min_s": (0.01, 3600.0),
    "reconnect_max_s": (0.01, 86400.0),
}
"""Allowed ranges of the uplink's numbers (finite, inclusive)."""
_MAX_DEADBAND = 1e15
_MAX_PREFIX = 200  # characters: the topic root stays far below MQTT's 65535-byte topic limit


def check_config(cfg: AgentConfig) -> list[ConfigIssue]:
    """Every problem of a decoded config (no I/O), ordered by table as the reference file is:
    uplink, commands, buffer, serial ports, devices, rules."""
    issues = _uplink_issues(cfg)
    issues += _commands_issues(cfg.commands)
    issues += adapt("buffer", buffer_issues(cfg.buffer))
    issues += _operations_issues(cfg)
    issues += _port_issues(cfg.serial_ports)
    issues += _device_issues(cfg)
    tag_names = list(dict.fromkeys(t.name for d in cfg.devices for t in d.tags))
    rbe = cfg.uplink.report_by_exception
    if rbe is not None:
        for name in rbe.deadbands:
            if name not in tag_names:
                close = difflib.get_close_matches(name, tag_names, n=1)
                hint = f'did you mean "{close[0]}"?' if close else "use a configured tag name"
                path = f"uplink.report_by_exception.deadbands.{name}"
                issues.append(ConfigIssue(path, "unknown tag", hint))
    if cfg.rules:
        issues += adapt("", check_rules(cfg.rules, tag_names))
    issues += _output_issues(cfg, tag_names)
    issues += adapt("review", review_issues(cfg.review, tag_names))
    issues += adapt("console", console_issues(cfg.console))
    issues += governance_issues(cfg)  # codes, classes, policies, windows (governance.py)
    return issues


def _output_issues(cfg: AgentConfig, tag_names: list[str]) -> list[ConfigIssue]:
    """``[[outputs]]``: the drivers' write-target checks and the alarm selections."""
    if not cfg.outputs:
        return []
    device_tags = {d.name: [t.name for t in d.tags] for d in cfg.devices}
    found = output_problems(cfg.outputs, cfg.devices)
    found += selection_problems(cfg.outputs, tag_names=tag_names, device_tags=device_tags)
    return [ConfigIssue(key, message, hint) for key, message, hint in found]


def _operations_issues(cfg: AgentConfig) -> list[ConfigIssue]:
    ops = cfg.operations
    out = _text("operations.metrics.host", ops.metrics.host, "a host name or address", spaces=False)
    sock = ops.status_socket
    if "\0" in sock or len(sock.encode()) > 100:  # sun_path holds 108 bytes with the NUL
        out.append(
            ConfigIssue(
                "operations.status_socket",
                "must be a path of at most 100 bytes without NUL",
                "use a short absolute path, e.g. /run/safeedge/status.sock",
            )
        )
    return out


def _number(key: str, value: float, low: float, high: float) -> list[ConfigIssue]:
    if math.isfinite(value) and low <= value <= high:
        return []
    msg = f"must be a finite number in [{low:.15g}, {high:.15g}], got {value:.15g}"
    return [ConfigIssue(key, msg, "set it to a number in that range")]


def _text(key: str, value: str | None, what: str, *, spaces: bool = True) -> list[ConfigIssue]:
    if value is None:
        return []
    if not value:
        return [ConfigIssue(key, f"{what} is empty", "set it, or remove the key")]
    if any(not c.isprintable() or (not spaces and c.isspace()) for c in value):
        return [ConfigIssue(key, f"{what} holds a control character or space", "remove it")]
    if len(value) > 253:
        return [ConfigIssue(key, f"{what} is longer than 253 characters", "shorten it")]
    return []


def _uplink_issues(cfg: AgentConfig) -> list[ConfigIssue]:
    uplink: UplinkConfig = cfg.uplink
    issues: list[ConfigIssue] = []
    try:
        root_topic(uplink.prefix, cfg.gateway.site, cfg.gateway.id)
    except ValueError as exc:
        hint = 'topic levels joined by "/", e.g. prefix = "safeedge/v1"'
        issues.append(ConfigIssue("uplink.prefix", str(exc), hint))
    if len(uplink.prefix) > _MAX_PREFIX:
        msg = f"prefix is longer than {_MAX_PREFIX} characters"
        issues.append(ConfigIssue("uplink.prefix", msg, "shorten it"))
    issues += _text("uplink.host", uplink.host, "host", spaces=False)
    issues += _text("uplink.client_id", uplink.client_id, "client_id", spaces=False)
    issues += _text("uplink.username", uplink.username, "username")
    for key, (low, high) in UPLINK_BOUNDS.items():
        issues += _number(f"uplink.{key}", getattr(uplink, key), low, high)
    rbe = uplink.report_by_exception
    if rbe is not None:
        here = "uplink.report_by_exception"
        issues += _number(f"{here}.deadband", rbe.deadband, 0.0, _MAX_DEADBAND)
        issues += _number(f"{here}.integrity_s", rbe.integrity_s, 0.001, 86400.0)
        for name, band in rbe.deadbands.items():
            issues += _number(f"{here}.deadbands.{name}", band, 0.0, _MAX_DEADBAND)
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


def _port_issues(ports: Sequence[SerialPortConfig]) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    names: dict[str, str] = {}
    paths: dict[str, str] = {}
    for i, port in enumerate(ports):
        here = f'serial_ports[{i}] "{port.name}"'
        issues += adapt(here, port_issues(port))
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
    framings: dict[tuple[str, int], tuple[str, str]] = {}
    bus_units: dict[tuple[str, int], str] = {}
    port_users: dict[str, list[tuple[str, DeviceConfig]]] = {}
    for i, device in enumerate(cfg.devices):
        here = f'devices[{i}] "{device.name}"'
        if device.name in device_names:
            msg = f'duplicate device name "{device.name}"'
            hint = f"already used by {device_names[device.name]}; device names must be unique"
            issues.append(ConfigIssue(f"{here}.name", msg, hint))
        else:
            device_names[device.name] = here
        if isinstance(device, ModbusTcpDeviceConfig):
            framing = framings.setdefault(
                (device.host.lower(), device.port), (device.framing, here)
            )
            if framing[0] != device.framing:
                msg = (
                    f'framing "{device.framing}" at {device.host}:{device.port}, where '
                    f'{framing[1]} uses "{framing[0]}"'
                )
                hint = "one TCP endpoint speaks one framing: Modbus TCP (mbap) or RTU over TCP"
                issues.append(ConfigIssue(f"{here}.framing", msg, hint))
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
        issues += adapt(here, device_issues(device))
        tags: Sequence[TagConfig | SerialLineTagConfig] = device.tags
        for j, tag in enumerate(tags):
            tag_path = f'{here}.tags[{j}] "{tag.name}"'
            if tag.name in tag_names:
                msg = f'duplicate tag name "{tag.name}"'
                hint = f"already used by {tag_names[tag.name]}; tag names are global to the gateway"
                issues.append(ConfigIssue(f"{tag_path}.name", msg, hint))
            else:
                tag_names[tag.name] = tag_path
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


def _unknown_port(here: str, name: str, known: Sequence[str]) -> ConfigIssue:
    if known:
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        listed = ", ".join(json.dumps(k) for k in known)
        hint = f'did you mean "{close[0]}"? ' if close else ""
        hint += f"known serial ports: {listed}"
    else:
        hint = f'no [[serial_ports]] are configured: add one with name = "{name}"'
    return ConfigIssue(f"{here}.serial_port", f'unknown serial port "{name}"', hint)


def selection_problems(
    outputs: Sequence[AlarmOutputConfig],
    *,
    tag_names: Sequence[str],
    device_tags: Mapping[str, Sequence[str]],
) -> list[tuple[str, str, str]]:
    """``(key, message, hint)`` for ``when`` selections that name nothing that exists."""
    problems = []
    known = set(tag_names)
    for k, out in enumerate(outputs):
        key = f'outputs[{k}] "{out.name}".when'
        for tag in out.when.tags:
            if tag not in known:
                problems.append((f"{key}.tags", f'unknown tag "{tag}"', "name a configured tag"))
        if out.when.match and not any(fnmatch.fnmatchcase(n, out.when.match) for n in known):
            problems.append((f"{key}.match", f'"{out.when.match}" matches no tag',
                             "use a glob such as \"GT-*\""))  # fmt: skip
        for device in out.when.devices:
            if device not in device_tags:
                problems.append((f"{key}.devices", f'unknown device "{device}"',
                                 "name a device of [[devices]]"))  # fmt: skip
    return problems
