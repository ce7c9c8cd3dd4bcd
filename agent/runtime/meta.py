"""The retained ``meta`` payload: devices, tags, their rules, the agent and config versions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import msgspec

from agent import __version__
from agent.config.governance import TagPolicy, codes_dict
from agent.tags import TagTable
from drivers import Device
from rules import RuleEngine

if TYPE_CHECKING:
    from agent.runtime.build import Components

__all__ = ["components_meta", "meta_payload"]


def components_meta(c: Components) -> bytes:
    """The meta of a built pipeline: every field from ``c`` (its tags, rules, devices,
    policies and codes), so a start and a reload cannot publish different shapes."""
    return meta_payload(
        tags=c.tags,
        engine=c.engine,
        devices=c.devices,
        agent_version=__version__,
        config_hash=c.config_hash,
        ts_ms=c.clock_ms(),
        policies=c.policies,
        codes=codes_dict(c.cfg.gateway.codes),
    )


def meta_payload(
    *,
    tags: TagTable,
    engine: RuleEngine,
    devices: Iterable[Device],
    agent_version: str,
    config_hash: str,
    ts_ms: int,
    policies: Sequence[TagPolicy] = (),
    codes: Mapping[str, str] | None = None,
) -> bytes:
    """JSON ``{"v": 1, "ts", "agent", "config_hash", "codes"?, "devices": [...], "tags": [...]}``.

    With ``policies`` (one per tag, by index) each tag also lists its ``class``, ``policy``
    (``raw`` | ``stats`` | ``local_only``: what the platform will and will not get),
    ``window_ms`` for a ``stats`` tag, ``precision`` when set and its effective ``codes``;
    ``codes`` are the gateway's standard codes (docs/uplink.md "Standard codes").
    """
    tag_docs: list[dict[str, object]] = []
    for tag in tags:
        doc: dict[str, object] = {
            "name": tag.name,
            "device": tag.device,
            "unit": tag.unit,
            "range": list(tag.range) if tag.range else None,
            "rules": engine.params(tag.index),
        }
        if policies:
            p = policies[tag.index]
            doc["class"] = p.data_class
            doc["policy"] = p.policy
            if p.policy == "stats":
                doc["window_ms"] = p.window_ms
            if p.precision is not None:
                doc["precision"] = p.precision
            if p.codes:
                doc["codes"] = p.codes
        tag_docs.append(doc)
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
            **({"codes": dict(codes)} if codes else {}),
            "devices": device_docs,
            "tags": tag_docs,
        }
    )
