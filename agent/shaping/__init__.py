"""Telemetry shaping by data-governance policy: precision, raw / stats / local-only, encoding.

:class:`agent.shaping.shaper.TelemetryShaper` is what the runtime's ingest calls per poll;
the per-tag settings it applies are resolved from the config by
:func:`agent.config.governance.resolve_policies`.
"""

from agent.shaping.shaper import TelemetryShaper

__all__ = ["TelemetryShaper"]
