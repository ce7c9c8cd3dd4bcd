"""A small config (two Modbus TCP devices, so two buses; rules on T1) and built components.

Nothing here connects: building is I/O-free, and the parts are driven directly by the tests.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from agent.config import AgentConfig, loads_config, resolved_paths
from agent.runtime import Components, build

NOW = 1_700_000_000_000


def config_text(
    data_dir: Path,
    *,
    uplink: bool = False,
    uplink_extra: str = "",
    buffer_extra: str = "",
    extra: str = "",
) -> str:
    return f"""
[gateway]
site = "S1"
id = "G1"
data_dir = "{data_dir}"

[uplink]
enabled = {"true" if uplink else "false"}
host = "127.0.0.1"
port = 1
{uplink_extra}
[buffer]
path = "buffer.db"
key_file = "buffer.key"
{buffer_extra}

[[devices]]
driver = "modbus_tcp"
name = "plc-a"
host = "127.0.0.1"
port = 1
poll_interval_s = 1.0

[[devices.tags]]
name = "T1"
address = 0
type = "uint16"

[[devices.tags]]
name = "T2"
address = 1
type = "uint16"

[[devices]]
driver = "modbus_tcp"
name = "plc-b"
host = "127.0.0.2"
port = 1
poll_interval_s = 2.0

[[devices.tags]]
name = "L-3"
address = 0
type = "uint16"

[[rules]]
match = "T1"
high = 80.0
deadband = 1.0
{extra}
"""


def make_components(
    tmp_path: Path,
    *,
    uplink: bool = False,
    uplink_extra: str = "",
    buffer_extra: str = "",
    extra: str = "",
    clock: Callable[[], int] = lambda: NOW,
) -> Components:
    path = tmp_path / "agent.toml"
    text = config_text(
        tmp_path / "data",
        uplink=uplink,
        uplink_extra=uplink_extra,
        buffer_extra=buffer_extra,
        extra=extra,
    )
    path.write_text(text)
    cfg: AgentConfig = loads_config(path.read_text(), source=str(path))
    return build(cfg, resolved_paths(cfg, path), password=None, clock_ms=clock)


@pytest.fixture
def components(tmp_path: Path) -> Components:
    return make_components(tmp_path)
