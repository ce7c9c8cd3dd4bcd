"""One issue shape for every config check, and the error that carries issues.

Why a tuple shape and not a class every leaf imports: ``drivers``, ``rules`` and ``buffer`` may
import neither ``agent`` (layers) nor each other (independence), and a sixth top-level package for
one type is avoidable. So the one issue type is the *shape* ``(path, message, hint)``, three
strings: each leaf's check returns ``list[tuple[str, str, str]]`` (``rules.RuleIssue`` is a
NamedTuple of that shape, so it is one too) and mypy checks every leaf against it.
:class:`ConfigIssue` is the agent's NamedTuple of the same shape, so a leaf's issue *is* a valid
ConfigIssue value; :func:`adapt` only puts the leaf's relative path under the key path of the
table the leaf was given (``devices[2] "plc-1"`` + ``tags[0] "GT-101".scale``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

from agent.logs import escape

__all__ = ["ConfigError", "ConfigIssue", "IssueShape", "adapt"]

IssueShape = tuple[str, str, str]
"""``(path, message, hint)``: what every check of every package returns."""


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
    ``str()`` gives one line per issue: ``FILE: PATH: MESSAGE (hint: HINT)``, escaped like a
    log value (:func:`agent.logs.escape`).
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
    # Paths, messages and hints quote the file's own text: escaped, so one issue is one line
    # and no control character or ANSI escape from the file reaches the terminal.
    parts = [source]
    if issue.path:
        parts.append(issue.path)
    parts.append(issue.message)
    line = escape(": ".join(parts))
    return f"{line} (hint: {escape(issue.hint)})" if issue.hint else line


def adapt(prefix: str, issues: Iterable[IssueShape]) -> list[ConfigIssue]:
    """The leaf issues ``issues`` with their paths put under ``prefix`` (``""``: unchanged)."""
    out = []
    for path, message, hint in issues:
        full = f"{prefix}.{path}" if prefix and path else (prefix or path)
        out.append(ConfigIssue(full, message, hint))
    return out
