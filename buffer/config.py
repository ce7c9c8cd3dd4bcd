"""Buffer configuration (``[buffer]`` table and its per-stream sub-tables).

``[buffer]`` sets the store-wide values; ``[buffer.alarm]``, ``[buffer.event]`` and
``[buffer.telemetry]`` may override retention and bound one stream's bytes::

    [buffer]
    retention_days = 30.0      # every stream, unless overridden below
    capacity_mb = 1024.0       # all streams together
    reserve_mb = 16.0          # disk space telemetry never takes: kept for alarms and events

    [buffer.telemetry]
    retention_days = 7.0
    capacity_mb = 512.0

:func:`buffer_issues` is the buffer's own check of its section (no I/O): every value
:meth:`buffer.Store.open` would refuse and every absurd one (``capacity_mb = inf``, a capacity
that rounds to 0 bytes). Issues are ``(path, message, hint)`` tuples relative to ``[buffer]``, the
project's one issue shape (``agent.config.issues`` explains the shape). Whether ``path`` is a
directory is a file-system question: the agent's config check stats it, not this module.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import msgspec

from buffer.record import Stream
from buffer.stats import StreamLimit

__all__ = [
    "CAPACITY_MB",
    "RESERVE_MB",
    "RETENTION_DAYS",
    "BufferConfig",
    "StreamLimitsConfig",
    "buffer_issues",
]

_MIB = 1024 * 1024


class StreamLimitsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One stream's overrides; unset keys inherit ``[buffer]`` (capacity: only the total bounds
    the stream). Undelivered alarms and events are never evicted, whatever their capacity."""

    retention_days: Annotated[float, msgspec.Meta(gt=0)] | None = None
    capacity_mb: Annotated[float, msgspec.Meta(gt=0)] | None = None


class BufferConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Where and how records are kept. Relative paths are relative to ``gateway.data_dir``."""

    path: str = "buffer.db"
    key_file: str = "buffer.key"
    cipher: Literal["aes-256-gcm", "sm4-gcm"] = "aes-256-gcm"
    retention_days: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    capacity_mb: Annotated[float, msgspec.Meta(gt=0)] = 1024.0
    reserve_mb: Annotated[float, msgspec.Meta(ge=0)] = 16.0
    alarm: StreamLimitsConfig = StreamLimitsConfig()
    event: StreamLimitsConfig = StreamLimitsConfig()
    telemetry: StreamLimitsConfig = StreamLimitsConfig()

    @property
    def capacity_bytes(self) -> int:
        return int(self.capacity_mb * _MIB)

    @property
    def reserve_bytes(self) -> int:
        return int(self.reserve_mb * _MIB)

    def stream_limits(self) -> dict[Stream, StreamLimit]:
        """The per-stream overrides as :meth:`buffer.Store.open` takes them."""
        out: dict[Stream, StreamLimit] = {}
        for stream, cfg in (
            (Stream.ALARM, self.alarm),
            (Stream.EVENT, self.event),
            (Stream.TELEMETRY, self.telemetry),
        ):
            cap = None if cfg.capacity_mb is None else int(cfg.capacity_mb * _MIB)
            out[stream] = StreamLimit(capacity_bytes=cap, retention_days=cfg.retention_days)
        return out


CAPACITY_MB = (1.0, 1_048_576.0)
"""Allowed ``capacity_mb`` (total and per stream): 1 MiB to 1 TiB."""
RESERVE_MB = (0.0, 1e12)
"""Allowed ``reserve_mb``. Larger than any disk is allowed (it keeps telemetry out of the store,
tests/buffer/test_full_disk_pipeline.py uses it); the bound keeps its bytes within an int64."""
RETENTION_DAYS = (0.001, 36_500.0)
"""Allowed ``retention_days``: from about 90 s to a hundred years."""


def _number(key: str, value: float, bounds: tuple[float, float]) -> list[tuple[str, str, str]]:
    low, high = bounds
    if math.isfinite(value) and low <= value <= high:
        return []
    msg = f"must be a finite number in [{low:.15g}, {high:.15g}], got {value:.15g}"
    return [(key, msg, f"set {key.rsplit('.', 1)[-1]} to a number in that range")]


def buffer_issues(cfg: BufferConfig) -> list[tuple[str, str, str]]:
    """Every problem of ``[buffer]`` and its stream tables, paths relative to ``[buffer]``."""
    out = _number("capacity_mb", cfg.capacity_mb, CAPACITY_MB)
    out += _number("reserve_mb", cfg.reserve_mb, RESERVE_MB)
    out += _number("retention_days", cfg.retention_days, RETENTION_DAYS)
    for name in ("path", "key_file"):
        value: str = getattr(cfg, name)
        if not value or "\0" in value:
            hint = "a file name, relative to gateway.data_dir or absolute"
            out.append((name, "must be a non-empty file name without NUL", hint))
    for stream in ("alarm", "event", "telemetry"):
        limits: StreamLimitsConfig = getattr(cfg, stream)
        if limits.capacity_mb is not None:
            out += _number(f"{stream}.capacity_mb", limits.capacity_mb, CAPACITY_MB)
        if limits.retention_days is not None:
            out += _number(f"{stream}.retention_days", limits.retention_days, RETENTION_DAYS)
    return out
