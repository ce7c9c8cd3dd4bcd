"""Periodic health: the ``health`` event upstream, systemd's ``STATUS=`` line, the metrics.

Every :data:`TICK_S` the snapshot is taken (agent/runtime/status.py), ``STATUS=`` updated and
the Prometheus collector given the new snapshot; every ``health_interval_s`` (0: never) the
same figures are recorded as a ``health`` event (schema: agent/schemas/event.json).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Final

from agent.notify import notify
from agent.runtime.sink import RecordSink
from agent.runtime.status import StatusSnapshot

__all__ = ["TICK_S", "health_fields", "health_loop", "status_line"]

TICK_S: Final = 10.0


def status_line(s: StatusSnapshot) -> str:
    """One line for ``systemctl status``: devices, alarms, backlog, uplink, degraded."""
    online = sum(d.state == "online" for d in s.devices)
    backlog = 0 if s.buffer is None else sum(x.undelivered for x in s.buffer.streams.values())
    parts = [
        f"{online}/{len(s.devices)} devices online",
        f"{len(s.alarms)} alarm{'s' if len(s.alarms) != 1 else ''} open",
        f"backlog {backlog}",
        f"uplink {s.uplink.state}",
    ]
    line = ", ".join(parts)
    if s.degraded:
        line = "DEGRADED: " + "; ".join(s.degraded) + " | " + line
    # sd_notify separates assignments by newlines: none may come from a reason's text
    return " ".join(line.split())[:400]


def health_fields(s: StatusSnapshot, interval_s: float) -> dict[str, object]:
    """The ``health`` event's fields (the snapshot, trimmed to what the platform needs), with
    the v2 schema's ``interval_s`` and ``counters`` (totals since start)."""
    buffer: dict[str, object] = {"bytes": 0, "capacity_bytes": 0, "streams": {}}
    if s.buffer is not None:
        buffer = {
            "bytes": s.buffer.bytes,
            "capacity_bytes": s.buffer.capacity_bytes,
            "streams": {
                name: {
                    "undelivered": st.undelivered,
                    "oldest_undelivered_ms": st.oldest_undelivered_ms,
                    "days_held": st.days_held,
                    "retention_days": st.retention_days,
                }
                for name, st in s.buffer.streams.items()
            },
        }
    return {
        "interval_s": interval_s,
        "counters": {
            "polls": s.polls,
            "samples": s.samples,
            "missed_deadlines": s.missed_deadlines,
            "append_failures": s.append_failures,
        },
        "uptime_s": s.uptime_s,
        "config_hash": s.config_hash,
        "degraded": s.degraded,
        "devices": [
            {
                "name": d.name,
                "state": d.state,
                "last_error": d.last_error,
                "last_error_reason": d.last_error_reason,
                "requests_per_cycle": d.requests_per_cycle,
                "rtt_p50_ms": d.rtt_p50_ms,
                "rtt_p95_ms": d.rtt_p95_ms,
                "last_good_ms": d.last_good_ms,
            }
            for d in s.devices
        ],
        "alarms_active": len(s.alarms),
        "buffer": buffer,
        "uplink": {
            "state": s.uplink.state,
            "session": s.uplink.session,
            "last_error": s.uplink.last_error,
            "in_flight": s.uplink.in_flight,
            "delivered": s.uplink.delivered,
        },
    }


async def health_loop(
    *,
    status: Callable[[], StatusSnapshot],
    sink: RecordSink,
    interval_s: float,
    publish: Callable[[StatusSnapshot], None] | None = None,
    tick_s: float = TICK_S,
) -> None:
    next_health = time.monotonic() + interval_s if interval_s > 0 else None
    while True:
        await asyncio.sleep(min(tick_s, interval_s) if interval_s > 0 else tick_s)
        snap = status()
        notify("STATUS=" + status_line(snap))
        if publish is not None:
            publish(snap)
        if next_health is not None and time.monotonic() >= next_health:
            next_health += interval_s
            sink.event("health", **health_fields(snap, interval_s))
