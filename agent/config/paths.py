"""Every file a config names, resolved once into the frozen config, and the one I/O check.

Rules (docs/config.md): ``gateway.data_dir``, the TLS files and ``uplink.password_file`` are
relative to the config file's directory; ``buffer.path`` and ``buffer.key_file`` are relative to
``data_dir``. Absolute paths are kept; ``~`` is not expanded. :func:`resolve` applies the rules
and returns a config whose path strings are all absolute, so every consumer (the buffer, the
uplink's TLS context, the password reader, the command store) reads the same resolved values and
none of them depends on the working directory. :class:`ResolvedPaths` is a typed view of them.

:func:`file_issues` is the only I/O of the config check: one ``stat`` per configured file, and
the first 100 bytes of an existing ``buffer.path``. A missing TLS or password file, a directory
where a file belongs (``buffer.path = "."``), a file at ``buffer.path`` that is not one of the
buffer's databases (the agent never moves nor overwrites it), or a password file or TLS key
with group/other permission bits is an issue; whether a file is *readable* is left to
``safeedge run`` (check-config may run as another user than the agent), which exits 78 naming
the file when it is not.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import msgspec

from agent.config.issues import ConfigIssue
from agent.config.schema import AgentConfig
from buffer.ledger import ledger_path
from buffer.schema import is_own_database

__all__ = ["ResolvedPaths", "file_issues", "resolve", "resolved_paths"]


@dataclass(frozen=True, slots=True)
class ResolvedPaths:
    """Absolute file locations of a config; None where a file is not configured."""

    data_dir: Path
    buffer_path: Path
    buffer_key_file: Path
    ca_file: Path | None
    cert_file: Path | None
    tls_key_file: Path | None
    password_file: Path | None


def resolve(cfg: AgentConfig, base_dir: Path) -> AgentConfig:
    """``cfg`` with every path made absolute by the rules above (``base_dir``: the config
    file's directory, made absolute against the working directory). Idempotent."""
    base = Path(base_dir).absolute()
    data_dir = base / cfg.gateway.data_dir
    up = cfg.uplink
    tls = up.tls
    if tls is not None:
        tls = msgspec.structs.replace(
            tls,
            ca_file=str(base / tls.ca_file),
            cert_file=None if tls.cert_file is None else str(base / tls.cert_file),
            key_file=None if tls.key_file is None else str(base / tls.key_file),
        )
    password = None if up.password_file is None else str(base / up.password_file)
    con = cfg.console
    cert, key = con.tls_cert_file, con.tls_key_file
    return msgspec.structs.replace(
        cfg,
        console=msgspec.structs.replace(
            con,
            tls_cert_file=None if cert is None else str(base / cert),
            tls_key_file=None if key is None else str(base / key),
        ),
        gateway=msgspec.structs.replace(cfg.gateway, data_dir=str(data_dir)),
        buffer=msgspec.structs.replace(
            cfg.buffer,
            path=str(data_dir / cfg.buffer.path),
            key_file=str(data_dir / cfg.buffer.key_file),
        ),
        uplink=msgspec.structs.replace(up, tls=tls, password_file=password),
    )


def resolved_paths(cfg: AgentConfig, config_path: Path) -> ResolvedPaths:
    """The typed view of ``cfg``'s files, resolved against ``config_path``'s directory (a no-op
    for a config from :func:`agent.config.load_config`, whose paths are absolute already)."""
    r = resolve(cfg, Path(config_path).absolute().parent)
    tls = r.uplink.tls

    def opt(name: str | None) -> Path | None:
        return None if name is None else Path(name)

    return ResolvedPaths(
        data_dir=Path(r.gateway.data_dir),
        buffer_path=Path(r.buffer.path),
        buffer_key_file=Path(r.buffer.key_file),
        ca_file=opt(tls.ca_file if tls else None),
        cert_file=opt(tls.cert_file if tls else None),
        tls_key_file=opt(tls.key_file if tls else None),
        password_file=opt(r.uplink.password_file),
    )


_NAME_MAX = 255  # bytes of one path component (Linux file systems)
_PATH_MAX = 4095  # bytes of a whole path


def _stat(path: str) -> tuple[int | None, str]:
    """``(st_mode, "")``, or ``(None, why)``; ``why`` is ``""`` when the file does not exist."""
    raw = os.fsencode(path)
    if len(raw) > _PATH_MAX or any(len(c) > _NAME_MAX for c in raw.split(b"/")):
        return None, f"name too long (a file name has at most {_NAME_MAX} bytes)"
    try:
        return os.stat(path).st_mode, ""
    except FileNotFoundError:
        return None, ""
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the name
        return None, (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc))


def file_issues(cfg: AgentConfig) -> list[ConfigIssue]:
    """Problems of the files of a resolved ``cfg`` found by one ``stat`` each (no file opened)."""
    issues: list[ConfigIssue] = []
    must_exist: list[tuple[str, str | None]] = [("uplink.password_file", cfg.uplink.password_file)]
    tls = cfg.uplink.tls
    if tls is not None and cfg.uplink.enabled:
        must_exist += [
            ("uplink.tls.ca_file", tls.ca_file),
            ("uplink.tls.cert_file", tls.cert_file),
            ("uplink.tls.key_file", tls.key_file),
        ]
    if cfg.console.enabled:
        must_exist += [
            ("console.tls_cert_file", cfg.console.tls_cert_file),
            ("console.tls_key_file", cfg.console.tls_key_file),
        ]
    for key, name in must_exist:
        if name is None:
            continue
        mode, why = _stat(name)
        if mode is None:
            issues.append(ConfigIssue(key, f"{why or 'file not found'}: {name}", "check the path"))
        elif not stat.S_ISREG(mode):
            issues.append(ConfigIssue(key, f"not a regular file: {name}", "name a file"))
    created = (
        ("gateway.data_dir", cfg.gateway.data_dir, True),
        ("buffer.path", cfg.buffer.path, False),
        ("buffer.key_file", cfg.buffer.key_file, False),
    )
    for key, name, is_dir in created:  # created by the agent when missing
        mode, why = _stat(name)
        if why:
            issues.append(ConfigIssue(key, f"{why}: {name}", "check the path"))
        elif mode is not None and stat.S_ISDIR(mode) != is_dir:
            what = "not a directory" if is_dir else "is a directory"
            hint = "name a directory" if is_dir else "name a file, e.g. buffer.db"
            issues.append(ConfigIssue(key, f"{what}: {name}", hint))
    issues += _foreign_buffer(cfg.buffer.path)
    issues += _secret_modes(cfg)
    return issues


def _foreign_buffer(name: str) -> list[ConfigIssue]:
    """A non-empty file at ``buffer.path`` that is not one of the buffer's databases (no buffer
    header and no seq ledger beside it): the agent would refuse it at start (it never moves nor
    overwrites a foreign file). Reads 100 bytes; a file this user cannot read is left to
    ``safeedge run``."""
    path = Path(name)
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
            return []
        with path.open("rb"):
            pass
    except (OSError, ValueError):
        return []
    if is_own_database(path) or ledger_path(path).exists():
        return []  # the buffer's own (after a power cut its header may be only in the WAL)
    return [
        ConfigIssue(
            "buffer.path",
            f"not a SafeEdge buffer database: {name}",
            "point buffer.path at a new file or at this agent's buffer; "
            "the agent never moves nor overwrites another file",
        )
    ]


def _secret_modes(cfg: AgentConfig) -> list[ConfigIssue]:
    """The password file and TLS private key must not be readable or writable by group or
    others, like the buffer key (buffer/crypto.py): refused, naming the file and the fix."""
    tls = cfg.uplink.tls
    secrets = [("uplink.password_file", cfg.uplink.password_file)]
    if tls is not None and cfg.uplink.enabled:
        secrets.append(("uplink.tls.key_file", tls.key_file))
    issues = []
    for key, name in secrets:
        if name is None:
            continue
        try:
            mode = os.stat(name).st_mode
        except (OSError, ValueError):
            continue  # reported above as missing or unreadable
        if stat.S_ISREG(mode) and mode & 0o077:
            issues.append(
                ConfigIssue(
                    key,
                    f"readable or writable by group/others (mode {stat.S_IMODE(mode):04o}): "
                    f"{name}",
                    f"run: chmod 600 {name}",
                )
            )
    return issues
