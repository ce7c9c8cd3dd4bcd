"""Buffer configuration (``[buffer]`` table)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

__all__ = ["BufferConfig"]


class BufferConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Where and how records are kept. Relative paths are relative to ``gateway.data_dir``."""

    path: str = "buffer.db"
    key_file: str = "buffer.key"
    cipher: Literal["aes-256-gcm", "sm4-gcm"] = "aes-256-gcm"
    retention_days: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    capacity_mb: Annotated[float, msgspec.Meta(gt=0)] = 1024.0
