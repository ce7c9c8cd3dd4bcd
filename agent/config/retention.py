"""Does the buffer's capacity hold the promised retention? A projection from the config.

Pure arithmetic on the config (no I/O, no numba): ``safeedge check-config`` prints the
projection and warns when the capacity is below the retention; ``safeedge status`` shows the
same figure from the rate measured while running.

The telemetry size model was measured with the agent's own encoder, batcher and sealed store
(15 tags at 1 Hz, one record per poll, noisy 3-decimal values, zlib + AES-GCM + the store's
64-byte row overhead): ~137 B for a 1-point record, ~252 B for 15 points, ~502 B for 60 (the
stored zlib layout that the uplink splices, buffer/crypto.py, costs ~11 B a record more).
:data:`RECORD_BYTES` + :data:`POINT_BYTES` per point lies at or above every measurement, so the
projection errs towards "holds fewer days". Report-by-exception only lowers the real rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from agent.config.schema import AgentConfig

__all__ = [
    "POINT_BYTES",
    "RECORD_BYTES",
    "TelemetryProjection",
    "days_held",
    "project_telemetry",
    "retention_warnings",
]

RECORD_BYTES: Final = 152
POINT_BYTES: Final = 7
_MIB: Final = 1024 * 1024
_DAY_S: Final = 86_400


@dataclass(frozen=True, slots=True)
class TelemetryProjection:
    points_per_s: float
    bytes_per_day: float
    capacity_bytes: int  # the telemetry stream's own capacity, else the store's
    retention_days: float
    days_held: float  # inf when nothing is polled


def days_held(capacity_bytes: float, bytes_per_day: float) -> float:
    return math.inf if bytes_per_day <= 0 else capacity_bytes / bytes_per_day


def project_telemetry(cfg: AgentConfig) -> TelemetryProjection:
    """Telemetry bytes a day at the configured poll rates, and the days the capacity holds."""
    batch = cfg.uplink.telemetry_batch
    points = records = 0.0
    for dev in cfg.devices:
        polls = _DAY_S / dev.poll_interval_s
        n = len(dev.tags)
        points += polls * n
        records += polls * max(1, math.ceil(n / batch)) if n else 0.0
    per_day = records * RECORD_BYTES + points * POINT_BYTES
    buf = cfg.buffer
    cap = buf.capacity_bytes
    if buf.telemetry.capacity_mb is not None:
        cap = min(cap, int(buf.telemetry.capacity_mb * _MIB))
    retention = buf.telemetry.retention_days or buf.retention_days
    return TelemetryProjection(
        points_per_s=points / _DAY_S,
        bytes_per_day=per_day,
        capacity_bytes=cap,
        retention_days=retention,
        days_held=days_held(cap, per_day),
    )


def retention_warnings(cfg: AgentConfig) -> list[str]:
    """A warning naming the numbers when the telemetry capacity holds less than its retention
    (the oldest delivered records would then be evicted before their retention ends)."""
    p = project_telemetry(cfg)
    if p.days_held >= p.retention_days:
        return []
    need_mb = math.ceil(p.bytes_per_day * p.retention_days / _MIB)
    return [
        f"buffer: capacity {p.capacity_bytes / _MIB:.0f} MiB holds about {p.days_held:.1f} days "
        f"of telemetry at {p.points_per_s:.1f} points/s ({p.bytes_per_day / _MIB:.1f} MiB/day), "
        f"less than retention_days = {p.retention_days:g}: set capacity_mb to at least {need_mb} "
        "or lower the retention"
    ]
