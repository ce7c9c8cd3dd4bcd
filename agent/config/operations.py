"""Where the operations endpoints of a config are (no I/O; importing this loads no numba)."""

from __future__ import annotations

import os
from pathlib import Path

from agent.config.schema import AgentConfig

__all__ = ["DEFAULT_STATUS_SOCKET", "status_socket_path"]

DEFAULT_STATUS_SOCKET = Path("/run/safeedge/status.sock")  # RuntimeDirectory=safeedge


def status_socket_path(cfg: AgentConfig) -> Path:
    """The configured path (relative: to data_dir), else systemd's ``$RUNTIME_DIRECTORY``
    (the agent's environment; ``safeedge status`` run by hand has none and uses
    :data:`DEFAULT_STATUS_SOCKET` when the data directory has no socket), else
    ``<data_dir>/status.sock``."""
    data_dir = Path(cfg.gateway.data_dir)
    configured = cfg.operations.status_socket
    if configured:
        return data_dir / configured  # an absolute path stays as it is
    runtime_dir = os.environ.get("RUNTIME_DIRECTORY")
    if runtime_dir:
        return Path(runtime_dir.split(":")[0]) / "status.sock"
    return data_dir / "status.sock"
