"""Bytes on the wire per reading and per hour, through the agent's real shaping and encoding.

Used by bench_uplink.py. Every figure comes from the agent's own code path: columns →
:class:`agent.shaping.TelemetryShaper` (policy, precision, report-by-exception, statistics,
body v1 or v2) → the buffer's stored form (:func:`buffer.crypto.pack`: a deflated body is
handed out as it is) → :func:`agent.codec.encode_envelope` (``v`` from the body) → the uplink's
payload encoding (zlib when configured: a stored deflated body is spliced in) → the size of
the MQTT 5 QoS 1 PUBLISH packet that carries it (with the content-type property the uplink
sends on MQTT 5; TCP/IP and TLS framing excluded).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from agent.codec import encode_envelope, envelope_head
from agent.codec_v2 import body_version
from agent.config import loads_config, resolved_paths
from agent.config.governance import TagPolicy
from agent.runtime import build
from agent.shaping import TelemetryShaper
from agent.uplink.encoding import CONTENT_TYPES, EnvelopeParts, encode_payload
from buffer.crypto import pack, unpack_lazy
from drivers import Quality

__all__ = [
    "SiteBytes",
    "demo_site_bytes",
    "fleet_bodies",
    "fleet_site_bytes",
    "publish_packet_bytes",
]

SITE, GW = "CN-JS-0042", "tank-farm-gw1"
T0 = 1_764_300_000_000
QUALITIES = {int(q): q.wire_name for q in Quality if q}


def publish_packet_bytes(topic: str, payload: int, content_type: str | None = None) -> int:
    """Size of an MQTT 5 QoS 1 PUBLISH: header, topic, packet id, properties, payload."""
    props = 0 if content_type is None else 3 + len(content_type.encode())
    remaining = 2 + len(topic.encode()) + 2 + 1 + props + payload
    varint = 1 if remaining < 128 else 2 if remaining < 16384 else 3 if remaining < 2097152 else 4
    return 1 + varint + remaining


@dataclass(frozen=True, slots=True)
class SiteBytes:
    readings: int  # samples polled
    messages: int
    wire_bytes: int  # PUBLISH packets

    @property
    def per_reading(self) -> float:
        return self.wire_bytes / self.readings


def _wire(bodies: list[bytes], compression: str, seq0: int) -> tuple[int, int]:
    encoding = "json+zlib" if compression == "zlib" else "json"
    topic = f"safeedge/v1/{SITE}/{GW}/telemetry"
    total = 0
    for i, body in enumerate(bodies):
        fields = {"site": SITE, "gateway": GW, "stream": "telemetry", "seq": seq0 + i,
                  "ts_ms": T0, "backfill": False, "v": body_version("telemetry", body)}  # fmt: skip
        stored = unpack_lazy(pack(body))  # as the forwarder gets it from the buffer
        env: bytes | EnvelopeParts = (
            encode_envelope(**fields, body=body)  # type: ignore[arg-type]
            if isinstance(stored, bytes)
            else EnvelopeParts(envelope_head(**fields), stored, b"}")  # type: ignore[arg-type]
        )
        data = encode_payload(env, encoding)  # type: ignore[arg-type]
        total += publish_packet_bytes(topic, len(data), CONTENT_TYPES[encoding])
    return len(bodies), total


def _fleet_columns(tags: int, polls: int, seed: int) -> Iterator[NDArray[np.float64]]:
    """One column per poll: a quarter digital states (0/1), the rest analog readings in
    0–100 at one decimal (a 4–20 mA input scaled and sent at its precision)."""
    rng = random.Random(seed)
    digital = np.array([i % 4 == 0 for i in range(tags)])
    for _ in range(polls):
        analog = np.array([round(rng.uniform(0, 100), 1) for _ in range(tags)])
        states = np.array([float(rng.random() < 0.3) for _ in range(tags)])
        yield np.where(digital, states, analog)


def fleet_bodies(*, tags: int, polls: int, body: int, batch: int) -> Iterator[list[bytes]]:
    """Per poll, the records of ``tags`` tags named ``GT-00001``.. (8 characters) on one device
    (one timestamp per poll) polled at 1 s, every reading sent (policy raw), ``batch`` points
    per record at most."""
    names = [f"GT-{i:05d}" for i in range(tags)]
    policy = TagPolicy(data_class="internal", policy="raw", window_ms=60_000, precision=None,
                       codes={})  # fmt: skip
    shaper = TelemetryShaper(
        names=names, policies=[policy] * tags, qualities=QUALITIES, body=body,  # type: ignore[arg-type]
        max_points=batch, max_bytes=1 << 20, linger_ms=0, rbe=None,
    )  # fmt: skip
    tag = np.arange(tags, dtype=np.int32)
    q = np.zeros(tags, dtype=np.uint8)
    for k, values in enumerate(_fleet_columns(tags, polls, seed=1)):
        ts = np.full(tags, T0 + 1000 * k, dtype=np.int64)
        yield shaper.add(tag, ts, values, q, int(ts[0]))


def fleet_site_bytes(
    *, tags: int, polls: int, body: int, compression: str, batch: int
) -> SiteBytes:
    """Wire bytes of :func:`fleet_bodies`."""
    messages = wire = 0
    for bodies in fleet_bodies(tags=tags, polls=polls, body=body, batch=batch):
        m, w = _wire(bodies, compression, messages + 1)
        messages, wire = messages + m, wire + w
    return SiteBytes(tags * polls, messages, wire)


def demo_site_bytes(config_text: str, *, seconds: int, compression: str) -> SiteBytes:
    """The simulated tank farm (provisioning.simulator) polled every second for ``seconds``
    through the shaper ``config_text`` builds; values quantised as the drivers decode the
    registers (int16/uint16 × scale, float32 widened), so float noise is what the agent sees."""
    from provisioning.simulator import REGISTER_MAP, scenario_values

    cfg = loads_config(config_text)
    c = build(cfg, resolved_paths(cfg, Path("/nonexistent/agent.toml")), password=None,
              clock_ms=lambda: T0)  # fmt: skip
    names = c.tags.names
    tag = np.arange(len(names), dtype=np.int32)
    q = np.zeros(len(names), dtype=np.uint8)
    messages = wire = 0
    for s in range(seconds + 1):
        now = T0 + 1000 * s
        if s == seconds:  # the end of the hour: what is held or open is sent too
            bodies = c.shaper.due(now)
        else:
            v = scenario_values(float(s), seed=1)
            values = np.array([_as_read(v[n], REGISTER_MAP[n]) for n in names])
            bodies = c.shaper.add(tag, np.full(len(names), now, np.int64), values, q, now)
        m, w = _wire(bodies, compression, messages + 1)
        messages, wire = messages + m, wire + w
    return SiteBytes(len(names) * seconds, messages, wire)


def _as_read(value: float, spec: object) -> float:
    kind, scale = getattr(spec, "type"), getattr(spec, "scale")  # noqa: B009
    if kind == "float32":
        return float(np.float32(value))
    return round(value / scale) * scale  # the driver's raw × scale (2.9000000000000004 ...)
