"""A fleet of gateway uplinks on one event loop survives a broker restart: reconnects are spread
over the jitter window (not in lock-step), a gateway is back within seconds, and every record
reaches the platform. The fleet driver is benchmarks/fleet.py (also behind bench_fleet.py).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import statistics
import sys
from pathlib import Path
from types import ModuleType

import pytest

from agent.config import UplinkConfig
from tests.support.mosquitto import Broker


def _fleet() -> ModuleType:
    path = Path(__file__).parents[3] / "benchmarks" / "fleet.py"
    spec = importlib.util.spec_from_file_location("fleet", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("fleet", module)
    spec.loader.exec_module(module)
    return module


FLEET = _fleet()


def _persistent_broker(tmp_path: Path) -> Broker:
    d = tmp_path / "broker"
    # The platform's persistent session must queue everything sent while it reconnects.
    extra = ["persistence true", f"persistence_location {d}/", "max_queued_messages 0"]
    broker = Broker(d, extra_config=extra)
    broker.start()
    return broker


def _restart_fleet(tmp_path: Path, gateways: int, outage_s: float) -> object:
    broker = _persistent_broker(tmp_path)
    cfg = UplinkConfig()  # the shipped back-off defaults
    logging.getLogger("agent.uplink").setLevel(logging.ERROR)
    try:
        return asyncio.run(
            FLEET.run_fleet(
                host=broker.host, port=broker.port, gateways=gateways,
                reconnect_min_s=cfg.reconnect_min_s, reconnect_max_s=cfg.reconnect_max_s,
                stop_broker=broker.stop, start_broker=broker.start, outage_s=outage_s,
                timeout_s=60.0,
            )
        )  # fmt: skip
    finally:
        broker.stop()


def _check(result: object, window_s: float) -> None:
    r = result.reconnect_s  # type: ignore[attr-defined]
    n = result.gateways  # type: ignore[attr-defined]
    print("\n".join(FLEET.histogram(r)))
    assert result.delivered == result.expected  # type: ignore[attr-defined]
    # Spread: the reconnects cover most of the jitter window, and no half-second holds more
    # than a third of the fleet (lock-step would put everyone in one bin).
    assert max(r) - min(r) >= 0.5 * window_s, r
    bins: dict[int, int] = {}
    for v in r:
        bins[int(v / 0.5)] = bins.get(int(v / 0.5), 0) + 1
    assert max(bins.values()) <= max(3, n // 3), bins
    # Back within seconds: the median gateway has its first record acknowledged within 3 s
    # (+ 0.5 s for this shared 2-core machine's scheduling).
    assert statistics.median(result.first_ack_s) <= 3.5, result.first_ack_s  # type: ignore[attr-defined]
    assert max(r) <= UplinkConfig().reconnect_max_s + 2.0  # no gateway waits past the ceiling


@pytest.mark.integration
def test_a_fleet_of_40_reconnects_spread_and_delivers_every_record(tmp_path: Path) -> None:
    cfg = UplinkConfig()
    _check(_restart_fleet(tmp_path, 40, outage_s=8.0), cfg.reconnect_max_s - cfg.reconnect_min_s)


@pytest.mark.slow
@pytest.mark.integration
def test_a_fleet_of_200_reconnects_spread_and_delivers_every_record(tmp_path: Path) -> None:
    cfg = UplinkConfig()
    _check(_restart_fleet(tmp_path, 200, outage_s=12.0), cfg.reconnect_max_s - cfg.reconnect_min_s)
