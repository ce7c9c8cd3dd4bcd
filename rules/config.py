"""Rule configuration (``[[rules]]`` tables), keys exactly as in design/RULES.md.

A table selects tags by ``tags = [...]`` or a glob ``match = "GT-*"`` and may name a shipped
``template``; its keys override the template's. Tables are merged per tag in file order (later
tables win per key). Cross-key checks (``high <= high_high`` ...) are done by
:func:`rules.validate_params` on the merged parameters, naming tag and key.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

__all__ = ["RuleConfig"]

NonNeg = Annotated[float, msgspec.Meta(ge=0)]
Pos = Annotated[float, msgspec.Meta(gt=0)]


class RuleConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    tags: tuple[str, ...] | None = None
    match: str | None = None
    template: str | None = None
    high: float | None = None
    high_high: float | None = None
    low: float | None = None
    low_low: float | None = None
    deadband: NonNeg | None = None
    high_deadband: NonNeg | None = None
    high_high_deadband: NonNeg | None = None
    low_deadband: NonNeg | None = None
    low_low_deadband: NonNeg | None = None
    on_delay_s: NonNeg | None = None
    off_delay_s: NonNeg | None = None
    latch: bool | None = None
    range: tuple[float, float] | None = None
    roc_limit_per_min: Pos | None = None
    roc_window_s: Pos | None = None
    trend_window_s: Pos | None = None
    trend_horizon_s: Pos | None = None
    trend_min_points: Annotated[int, msgspec.Meta(ge=3)] | None = None
    stuck_s: Pos | None = None
    stuck_band: NonNeg | None = None
