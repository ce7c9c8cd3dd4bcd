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
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from buffer.record import Stream
from buffer.stats import StreamLimit

__all__ = ["BufferConfig", "StreamLimitsConfig"]

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
