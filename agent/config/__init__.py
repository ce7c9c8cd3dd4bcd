"""The agent's config file: one TOML document parsed once into frozen, typed objects.

Layout::

    schema.py   the structs (pure data); the leaves' structs are embedded
    decode.py   TOML and msgspec errors → located issues
    issues.py   ConfigIssue / ConfigError and the one issue shape every check returns
    checks.py   the leaves' checks composed + cross-section checks (no I/O)
    governance.py  classes, policies, precision, standard codes: structs, resolution, checks
    paths.py    paths resolved once into the config; the one stat-only file check
    load.py     load_config / loads_config: the path both check-config and run take

Reference for installers: docs/config.md.
"""

from agent.config.checks import check_config
from agent.config.issues import ConfigError, ConfigIssue, IssueShape, adapt
from agent.config.load import load_config, loads_config
from agent.config.paths import ResolvedPaths, file_issues, resolve, resolved_paths
from agent.config.schema import (
    AgentConfig,
    AlarmOutputConfig,
    CommandsConfig,
    DeviceConfig,
    GatewayConfig,
    LoggingConfig,
    OutputWhen,
    ReportByExceptionConfig,
    TlsConfig,
    UplinkConfig,
)

__all__ = [
    "AgentConfig",
    "AlarmOutputConfig",
    "CommandsConfig",
    "ConfigError",
    "ConfigIssue",
    "DeviceConfig",
    "GatewayConfig",
    "IssueShape",
    "LoggingConfig",
    "OutputWhen",
    "ReportByExceptionConfig",
    "ResolvedPaths",
    "TlsConfig",
    "UplinkConfig",
    "adapt",
    "check_config",
    "file_issues",
    "load_config",
    "loads_config",
    "resolve",
    "resolved_paths",
]
