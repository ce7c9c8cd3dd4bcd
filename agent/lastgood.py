"""The last config that ran, kept in the data directory, for a start with a broken config.

``<data_dir>/last-good.json`` holds the resolved config (absolute paths, so it does not depend
on where the original file was) as JSON, written atomically (temporary file, fsync, rename)
after a start reached ``ready`` and after every applied reload. At start, when the given
config is invalid, :func:`fallback` finds that file for the same gateway and checks it exactly
as ``safeedge run`` checks a config; the agent then runs it, degraded.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import msgspec

from agent.config import AgentConfig, ConfigError, check_config, file_issues
from agent.config.schema import GatewayConfig

__all__ = ["LAST_GOOD", "describe", "fallback", "save"]

LAST_GOOD = "last-good.json"
_DEFAULT_DATA_DIR = next(
    f.default for f in msgspec.structs.fields(GatewayConfig) if f.name == "data_dir"
)


class _Doc(msgspec.Struct, frozen=True):
    format: str
    gateway: str
    config: AgentConfig


def save(cfg: AgentConfig) -> Path:
    """Write ``cfg`` (resolved) as the last good config of its data directory."""
    target = Path(cfg.gateway.data_dir) / LAST_GOOD
    tmp = target.with_name(target.name + ".tmp")
    data = msgspec.json.encode(_Doc("safeedge-last-good", cfg.gateway.id, cfg))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(target)
    return target


def _data_dir_and_gateway(config_path: Path) -> tuple[Path, str | None]:
    """Where the broken file says the data is (if it parses as TOML), and its gateway id."""
    data_dir, gateway = str(_DEFAULT_DATA_DIR), None
    try:
        raw = tomllib.loads(config_path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        raw = {}
    gw = raw.get("gateway")
    if isinstance(gw, dict):
        if isinstance(gw.get("data_dir"), str):
            data_dir = gw["data_dir"]
        if isinstance(gw.get("id"), str):
            gateway = gw["id"]
    return config_path.absolute().parent / data_dir, gateway


def fallback(config_path: Path) -> tuple[AgentConfig, Path] | None:
    """The last good config for the gateway ``config_path`` names, checked, or None when
    there is none (a first install), it is for another gateway, or it no longer checks."""
    data_dir, gateway = _data_dir_and_gateway(config_path)
    candidates = [data_dir / LAST_GOOD]
    state_dir = os.environ.get("STATE_DIRECTORY")  # systemd's StateDirectory=
    if state_dir:
        candidates.append(Path(state_dir.split(":")[0]) / LAST_GOOD)
    for path in candidates:
        try:
            doc = msgspec.json.decode(path.read_bytes(), type=_Doc)
        except (OSError, msgspec.DecodeError):
            continue
        if doc.format != "safeedge-last-good" or (gateway is not None and doc.gateway != gateway):
            continue
        if check_config(doc.config) or file_issues(doc.config):
            continue
        return doc.config, path
    return None


def describe(error: ConfigError) -> list[str]:
    """The rejected config's issues, one line each (for ``config_rejected``)."""
    return str(error).splitlines()
