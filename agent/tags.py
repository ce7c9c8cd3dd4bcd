"""The agent's tag table: every configured point, indexed in config order.

Tag indices are what drivers put in ``SampleBatch.tag`` and what the rule engine reports in
``AlarmEvent.tag``; names are what the uplink carries.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import msgspec

from agent.config import AgentConfig

__all__ = ["TagInfo", "TagTable", "config_hash"]


@dataclass(frozen=True, slots=True)
class TagInfo:
    index: int
    name: str
    device: str
    unit: str
    range: tuple[float, float] | None


class TagTable:
    def __init__(self, cfg: AgentConfig) -> None:
        infos: list[TagInfo] = []
        for device in cfg.devices:
            for tag in device.tags:
                infos.append(TagInfo(len(infos), tag.name, device.name, tag.unit, tag.range))
        self._infos = tuple(infos)
        self.names: tuple[str, ...] = tuple(t.name for t in infos)
        self.index: dict[str, int] = {t.name: t.index for t in infos}

    def __len__(self) -> int:
        return len(self._infos)

    def __iter__(self) -> Iterator[TagInfo]:
        return iter(self._infos)

    def __getitem__(self, index: int) -> TagInfo:
        return self._infos[index]


def config_hash(cfg: AgentConfig) -> str:
    """Short, stable fingerprint of the effective config (sent in ``meta`` and events)."""
    return hashlib.sha256(msgspec.json.encode(cfg)).hexdigest()[:16]
