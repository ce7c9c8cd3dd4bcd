"""A fleet of gateway uplinks on one event loop, and a broker restart in the middle.

Used by bench_fleet.py (the histogram) and tests/agent/uplink/test_fleet.py (the assertions).
Each simulated gateway is the agent's real :class:`agent.uplink.Uplink` (paho on the loop,
the session's back-off) with a small in-memory stand-in for the store and forwarder: records
are seqs 1..N, handed over while the in-flight window has room, settled on PUBACK, handed
over again when the connection lost them. (The real forwarder needs a store per gateway: 200
SQLite files and keys would measure the disk, not the reconnects.) The platform side is a
:class:`central.listen.Listener` with a persistent session on a broker with persistence, so
what the broker accepted before the restart reaches it after.

Timeline: all gateways connect and send ``before`` records; the broker stops; during the
outage each gateway produces ``during`` records (held, as the buffer would hold them); the
broker starts again at ``t_back``; every gateway reconnects on its own back-off. Measured per
gateway: seconds from ``t_back`` to its CONNACK and to its first acknowledged record.
"""

from __future__ import annotations

import asyncio
import collections
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.codec import encode_envelope, event_body
from agent.config import UplinkConfig
from agent.uplink import Outcome, Uplink
from central.listen import Listener, Message

__all__ = ["FleetResult", "histogram", "run_fleet"]

SITE = "FLEET"


@dataclass
class _Gateway:
    name: str
    uplink: Uplink
    total: int
    pending: collections.deque[int] = field(default_factory=collections.deque)
    acked: set[int] = field(default_factory=set)
    sessions: int = 0
    session_at: list[float] = field(default_factory=list)  # monotonic, per CONNACK
    acked_at: list[float] = field(default_factory=list)  # monotonic, per accepted record

    def pump(self) -> None:
        now = time.monotonic()
        for r in self.uplink.take_results():
            if r.outcome is Outcome.ACCEPTED:
                self.acked.add(r.token)
                self.acked_at.append(now)
            else:  # lost with the connection (or refused): hand it over again
                self.pending.appendleft(r.token)
        s = self.uplink.stats().sessions
        if s > self.sessions:
            self.sessions = s
            self.session_at.append(now)
        while self.pending and self.uplink.room:
            seq = self.pending.popleft()
            body = event_body("fleet", seq, {"n": seq})
            env = encode_envelope(site=SITE, gateway=self.name, stream="event", seq=seq,
                                  ts_ms=seq, backfill=False, body=body)  # fmt: skip
            if not self.uplink.publish("event", env, token=seq):
                self.pending.appendleft(seq)
                break


@dataclass(frozen=True)
class FleetResult:
    gateways: int
    reconnect_s: list[float]  # t_back → CONNACK, per gateway
    first_ack_s: list[float]  # t_back → first accepted record, per gateway
    delivered: int  # distinct (gateway, seq) the platform received
    expected: int

    @property
    def median_first_ack_s(self) -> float:
        return statistics.median(self.first_ack_s)


def histogram(values: list[float], *, bin_s: float = 0.5, width: int = 40) -> list[str]:
    """Text histogram lines ``"  1.0– 1.5 s  ####### 12"``."""
    if not values:
        return []
    top = max(values)
    bins = [0] * (int(top / bin_s) + 1)
    for v in values:
        bins[int(v / bin_s)] += 1
    scale = max(bins) / width if max(bins) > width else 1
    return [
        f"  {k * bin_s:4.1f}–{(k + 1) * bin_s:4.1f} s  {'#' * round(n / scale):<{width}} {n}"
        for k, n in enumerate(bins)
    ]


async def run_fleet(
    *,
    host: str,
    port: int,
    gateways: int,
    reconnect_min_s: float,
    reconnect_max_s: float,
    stop_broker: Callable[[], None],
    start_broker: Callable[[], None],
    outage_s: float,
    before: int = 3,
    during: int = 3,
    timeout_s: float = 120.0,
) -> FleetResult:
    """Run the timeline of the module docstring; raises TimeoutError when the fleet does not
    settle within ``timeout_s`` after the broker is back."""
    loop = asyncio.get_running_loop()
    received: set[tuple[str, int]] = set()
    lock = threading.Lock()

    def on_message(m: Message) -> None:
        if m.envelope is not None:
            with lock:
                received.add((m.gateway, m.envelope.seq))

    platform = Listener(host=host, port=port, on_message=on_message, site=SITE,
                        client_id="fleet-platform", session_expiry_s=600)  # fmt: skip
    await asyncio.to_thread(platform.start, 10.0)
    fleet: list[_Gateway] = []
    for i in range(gateways):
        cfg = UplinkConfig(host=host, port=port, reconnect_min_s=reconnect_min_s,
                           reconnect_max_s=reconnect_max_s, keepalive_s=30)  # fmt: skip

        def wake(g: list[_Gateway] = fleet, k: int = i) -> None:
            loop.call_soon(g[k].pump)  # outside paho's read

        up = Uplink(config=cfg, site=SITE, gateway=f"GW{i:03d}", agent_version="fleet",
                    on_results=wake)  # fmt: skip
        gw = _Gateway(f"GW{i:03d}", up, before + during)
        fleet.append(gw)
    try:
        for gw in fleet:
            gw.uplink.start()
            gw.pending.extend(range(1, before + 1))
        await _until(lambda: all(len(g.acked) == before for g in fleet), 60.0, "first records")
        await asyncio.to_thread(stop_broker)
        await _until(lambda: not any(g.uplink.connected for g in fleet), 10.0, "disconnects")
        for gw in fleet:  # records made during the outage wait in the "buffer"
            gw.pending.extend(range(before + 1, before + during + 1))
        await asyncio.sleep(outage_s)
        t_start = time.monotonic()
        await asyncio.to_thread(start_broker)  # returns once the port accepts connections
        _returned = [time.monotonic()]
        total = before + during
        await _until(lambda: all(len(g.acked) == total for g in fleet), timeout_s, "all records")
        # The broker is back when start_broker returned, or at the first CONNACK if a gateway
        # got in while start_broker was still probing the port.
        back = [min(t for t in g.session_at if t >= t_start) for g in fleet]
        t_back = min(time.monotonic() if not back else min(back), _returned[0])
        reconnect = [t - t_back for t in back]
        first = [min(t for t in g.acked_at if t >= t_start) - t_back for g in fleet]
        expected = gateways * total
        await _until(lambda: len(received) >= expected, 30.0, "platform delivery")
    finally:
        await asyncio.gather(*(g.uplink.stop(timeout_s=2) for g in fleet))
        await asyncio.to_thread(platform.stop)
    return FleetResult(gateways, sorted(reconnect), sorted(first), len(received), expected)


async def _until(done: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"fleet: {what} not reached within {timeout_s:g} s")
        await asyncio.sleep(0.02)
