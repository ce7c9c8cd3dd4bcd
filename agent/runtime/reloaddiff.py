"""What a reload changes, one line each, for ``config_applied``'s ``changes`` (operators read
them; the event schema says "what changed, one line each"). No I/O.

- :func:`policy_changes`: per tag whose resolved data policy differs (class, policy, statistics
  window, precision; codes are named, not listed), e.g. ``TT-101: policy raw -> stats``;
- :func:`output_changes`: per ``[[outputs]]`` entry added, removed or changed, e.g.
  ``outputs.siren: changed``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.config import AgentConfig

if TYPE_CHECKING:
    from agent.runtime.build import Components

__all__ = ["output_changes", "policy_changes"]

MAX_LINES = 50  # beyond: one summary line (a reload that reclassifies a whole plant)


def _cap(lines: list[str]) -> list[str]:
    if len(lines) <= MAX_LINES:
        return lines
    return [*lines[:MAX_LINES], f"... and {len(lines) - MAX_LINES} more"]


def policy_changes(old: Components, new: Components) -> list[str]:
    """Tags (by name, present in both) whose resolved policy differs, old -> new."""
    index = new.tags.index
    out = []
    for k, name in enumerate(old.tags.names):
        j = index.get(name)
        if j is None:
            continue
        a, b = old.policies[k], new.policies[j]
        parts = [
            f"{label} {x} -> {y}"
            for label, x, y in (
                ("class", a.data_class, b.data_class),
                ("policy", a.policy, b.policy),
                ("window_s", a.window_ms / 1000, b.window_ms / 1000),
                ("precision", a.precision, b.precision),
            )
            if x != y and (label != "window_s" or "stats" in (a.policy, b.policy))
        ]
        if a.codes != b.codes:
            parts.append("codes")
        if parts:
            out.append(f"{name}: {', '.join(parts)}")
    return _cap(out)


def output_changes(old: AgentConfig, new: AgentConfig) -> list[str]:
    """``[[outputs]]`` entries added, removed or changed, by name."""
    a = {o.name: o for o in old.outputs}
    b = {o.name: o for o in new.outputs}
    out = []
    for name in sorted(set(a) | set(b)):
        if name not in a:
            out.append(f"outputs.{name}: added")
        elif name not in b:
            out.append(f"outputs.{name}: removed")
        elif a[name] != b[name]:
            out.append(f"outputs.{name}: changed")
    return _cap(out)
