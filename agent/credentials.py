"""Secrets from systemd credentials (``LoadCredential=``), the preferred source.

Under systemd the unit loads ``buffer.key`` and ``broker-password`` into
``$CREDENTIALS_DIRECTORY`` (a private, read-only, non-swappable directory only the service
sees). When a credential is there it wins over the config's ``buffer.key_file`` and
``uplink.password_file``; an empty ``broker-password`` means no password. Without the
variable (a run by hand, the tests) the config's files are used as before.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from agent.config import AgentConfig, ResolvedPaths, resolved_paths

__all__ = ["BROKER_PASSWORD", "BUFFER_KEY", "broker_password", "credential", "with_credentials"]

BUFFER_KEY = "buffer.key"
BROKER_PASSWORD = "broker-password"  # noqa: S105 - a credential name, not a password


def credential(name: str) -> Path | None:
    """``$CREDENTIALS_DIRECTORY/name`` when the variable is set and the file exists."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return None
    path = Path(directory) / name
    return path if path.is_file() else None


def with_credentials(paths: ResolvedPaths) -> ResolvedPaths:
    """``paths`` with the buffer key taken from the credential when there is one."""
    key = credential(BUFFER_KEY)
    return paths if key is None else dataclasses.replace(paths, buffer_key_file=key)


def broker_password(cfg: AgentConfig, config_path: Path) -> str | None:
    """The broker password: the credential, else ``uplink.password_file``, else None.
    Raises OSError / UnicodeDecodeError when the file is unreadable (needs a human)."""
    cred = credential(BROKER_PASSWORD)
    if cred is not None:
        return cred.read_text(encoding="utf-8").strip() or None
    path = resolved_paths(cfg, config_path).password_file
    return None if path is None else path.read_text(encoding="utf-8").strip()
