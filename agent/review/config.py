"""``[review]`` config: report language, the site's time zone, and the incident recorder.

::

    [review]
    lang = "zh"                    # "en" or "zh" (safeedge review --lang overrides)
    timezone = "Asia/Shanghai"     # IANA name; report times carry its UTC offset
    fleeting_s = 10.0              # an alarm whose condition ends sooner is "fleeting"

    [review.recorder]
    levels = [2]                   # a raise/escalation to one of these levels opens an incident
    tags = ["GT-101", "GT-102"]    # only these tags open incidents (absent: every tag)
    related = "device"             # tags recorded with the trigger: its device's, or "none"
    groups = [["GT-102", "PT-101"]]  # explicit groups recorded together
    pre_s = 600.0                  # pre-trigger window kept in memory
    post_s = 600.0                 # recorded after all the incident's alarms cleared
    max_s = 7200.0                 # an incident is closed this long after it opened, at most
    ring_mb = 128.0                # memory budget of the pre-trigger ring (19 bytes a point)
    max_ring_points = 1000000      # optional: a cap on the ring's points below the budget

The ring holds ``pre_s`` of every watched tag (a trigger tag and the tags recorded with it) at
its poll period; its size and the warning when the budget is too small: agent/review/ring.py.

The time zone is checked when a report is made (it needs the system's zone data).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import msgspec

__all__ = ["RecorderConfig", "ReviewConfig", "review_issues"]


class RecorderConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = True
    levels: tuple[Annotated[int, msgspec.Meta(ge=1, le=2)], ...] = (2,)
    tags: tuple[str, ...] | None = None
    related: Literal["device", "none"] = "device"
    groups: tuple[tuple[str, ...], ...] = ()
    pre_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 600.0
    post_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 600.0
    max_s: Annotated[float, msgspec.Meta(gt=0, le=86400)] = 7200.0
    ring_mb: Annotated[float, msgspec.Meta(gt=0, le=16384)] = 128.0
    max_ring_points: Annotated[int, msgspec.Meta(ge=1000, le=1_000_000_000)] | None = None


class ReviewConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    lang: Literal["en", "zh"] = "en"
    timezone: str = "UTC"
    fleeting_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 10.0
    recorder: RecorderConfig = RecorderConfig()


def review_issues(review: ReviewConfig, tag_names: Sequence[str]) -> list[tuple[str, str, str]]:
    """(path, message, hint) for every ``review.recorder`` tag name that is not configured.
    The time zone is checked when a report is made (it needs the zone files)."""
    known = set(tag_names)
    out = []
    rec = review.recorder
    for i, name in enumerate(rec.tags or ()):
        if name not in known:
            out.append((f"recorder.tags[{i}]", f"unknown tag {name!r}", "use a configured tag"))
    for g, group in enumerate(rec.groups):
        for i, name in enumerate(group):
            if name not in known:
                path = f"recorder.groups[{g}][{i}]"
                out.append((path, f"unknown tag {name!r}", "use a configured tag"))
    return out
