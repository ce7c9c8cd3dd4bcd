"""Telemetry bodies of either version as v1 point rows, for tests that look at the points."""

from __future__ import annotations

from typing import Any

__all__ = ["points_of"]


def points_of(body: dict[str, Any]) -> list[list[Any]]:
    """``[[tag, ts, value(, quality)], ...]`` of a v1 body or a v2 group body, in order."""
    if "points" in body:
        rows: list[list[Any]] = body["points"]
        return rows
    out: list[list[Any]] = []
    for group in body["at"]:
        ts = body["t0"] + group[0]
        quals = group[2] if len(group) == 3 else {}
        for tag, value in group[1].items():
            row = [tag, ts, value]
            if tag in quals:
                row.append(quals[tag])
            out.append(row)
    return out
