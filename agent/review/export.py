"""``safeedge review export``: readings as a tidy table, one row per reading.

Columns ``time`` (ISO 8601 in the site's time zone, with its offset, millisecond precision),
``tag``, ``value`` (empty when not good), ``unit``, ``quality`` (``good``, ``bad_comm``, ...),
sorted by time then tag. CSV always; Parquet when ``pyarrow`` is installed (``--format
parquet``; ``time`` is then a timezone-aware timestamp column).
"""

from __future__ import annotations

import csv
import importlib.util
from collections.abc import Mapping
from typing import IO

import numpy as np

from agent.review.history import QUALITY_NAMES, PointLog
from agent.review.text import SiteTime

__all__ = ["parquet_available", "write_csv", "write_parquet"]

COLUMNS = ("time", "tag", "value", "unit", "quality")


def parquet_available() -> bool:
    return importlib.util.find_spec("pyarrow") is not None


def _order(points: PointLog) -> np.ndarray:
    names = np.array(points.tags, dtype=object)
    rank = np.argsort(np.argsort(names))  # tag order by name, not first appearance
    return np.lexsort((rank[points.tag] if len(points) else points.tag, points.ts_ms))


def write_csv(out: IO[str], points: PointLog, units: Mapping[str, str], site: SiteTime) -> int:
    """Write the rows; returns how many."""
    w = csv.writer(out, lineterminator="\n")
    w.writerow(COLUMNS)
    n = 0
    for i in _order(points).tolist():
        name = points.tags[int(points.tag[i])]
        v = float(points.value[i])
        q = int(points.quality[i])
        w.writerow(
            (
                site.fmt(int(points.ts_ms[i]), ms_digits=True),
                name,
                "" if q != 0 or np.isnan(v) else repr(v),
                units.get(name, ""),
                QUALITY_NAMES[q],
            )
        )
        n += 1
    return n


def write_parquet(path: str, points: PointLog, units: Mapping[str, str], site: SiteTime) -> int:
    """Write a Parquet file (needs pyarrow); returns the rows written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    order = _order(points)
    names = [points.tags[int(t)] for t in points.tag[order].tolist()]
    quality = points.quality[order]
    value = np.where(quality == 0, points.value[order], np.nan)
    table = pa.table(
        {
            "time": pa.array(points.ts_ms[order], type=pa.timestamp("ms", tz=site.name)),
            "tag": pa.array(names, type=pa.string()),
            "value": pa.array(value, type=pa.float64(), mask=np.isnan(value)),
            "unit": pa.array([units.get(n, "") for n in names], type=pa.string()),
            "quality": pa.array(
                [QUALITY_NAMES[int(q)] for q in quality.tolist()], type=pa.string()
            ),
        }
    )
    pq.write_table(table, path)
    return int(order.shape[0])
