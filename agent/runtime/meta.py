"""The retained ``meta`` payload: devices, tags, their rules, the agent and config versions."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from agent.tags import TagTable
from drivers import Device
from rules import RuleEngine

__all__ = ["meta_payload"]


def meta_payload(
    *,
    tags: TagTable,
    engine: RuleEngine,
    devices: Iterable[Device],
    agent_version: str,
    config_hash: str,
    ts_ms: int,
) -> bytes:
    """JSON ``{"v": 1, "ts", "agent", "config_hash", "devices": [...], "tags": [...]}``."""
    tag_docs = [
        {
            "name": tag.name,
            "device": tag.device,
            "unit": tag.unit,
            "range": list(tag.range) if tag.range else None,
            "rules": engine.params(tag.index),
        }
        for tag in tags
    ]
    device_docs = [
        {"name": d.name, "driver": type(d).__name__, "poll_interval_s": d.poll_interval_s}
        for d in devices
    ]
    return msgspec.json.encode(
        {
            "v": 1,
            "ts": ts_ms,
            "agent": agent_version,
            "config_hash": config_hash,
            "devices": device_docs,
            "tags": tag_docs,
        }
    )
