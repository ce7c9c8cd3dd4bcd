"""Loading a config: read once, parse once, check once, resolve paths once.

Stages; the first one that fails raises :class:`~agent.config.issues.ConfigError`:

1. TOML syntax: one issue, located by line and column;
2. shape and types, decoded by msgspec with unknown keys rejected: one issue (msgspec stops at
   the first error), translated into the key path with device and tag names;
3. the checks of every section (:func:`agent.config.checks.check_config`): *every* issue at once;
4. (with a base directory) paths resolved against it (:func:`agent.config.paths.resolve`).

The files the config names are checked by :func:`agent.config.paths.file_issues`, a separate
stat-only stage: ``safeedge run`` always runs it, ``safeedge check-config`` with ``--files``
(on the gateway; on a workstation the certificates are usually elsewhere). ``safeedge run`` and
``safeedge check-config --files`` thus make the same checks. Importing this module does not
import numba.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import msgspec

from agent.config.checks import check_config
from agent.config.decode import syntax_issue, validation_issue
from agent.config.issues import ConfigError, ConfigIssue
from agent.config.paths import file_issues, resolve
from agent.config.schema import AgentConfig

__all__ = ["load_config", "loads_config"]


def load_config(path: str | Path, *, check_files: bool = False) -> AgentConfig:
    """Read and validate the config file at ``path``; raises :class:`ConfigError`.

    The config returned holds absolute paths, resolved against ``path``'s directory. With
    ``check_files`` the files it names are stat'ed too (:func:`agent.config.paths.file_issues`).
    An unreadable or missing config file, or one that is not UTF-8, is a ConfigError too (it
    needs a human), chained to the OS error. A UTF-8 byte-order mark is accepted.
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
    cfg = loads_config(text, source=source, base_dir=Path(path).absolute().parent)
    issues = file_issues(cfg) if check_files else []
    if issues:
        raise ConfigError(source, issues)
    return cfg


def loads_config(
    text: str, *, source: str = "<string>", base_dir: Path | None = None
) -> AgentConfig:
    """Parse and validate a config document; raises :class:`ConfigError`, never returns None.

    ``source`` names the document in error messages. With ``base_dir`` (the directory the
    document's relative paths are relative to) the paths are resolved as :func:`load_config`
    does; without it the paths stay as written (for tools and tests that
    resolve them later with :func:`agent.config.resolved_paths`).
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [syntax_issue(str(exc), text)]) from exc
    try:
        cfg = msgspec.convert(raw, AgentConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(source, [validation_issue(str(exc), raw)]) from exc
    issues = check_config(cfg)
    if issues:
        raise ConfigError(source, issues)
    return cfg if base_dir is None else resolve(cfg, base_dir)
