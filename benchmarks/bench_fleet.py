"""Return after a broker outage: a 200-gateway fleet and a single gateway, two back-off settings.

For each setting (the agent's defaults, ``reconnect_max_s`` = 5 s, against the former 30 s) the
same run measures, from the moment the restarted broker accepts connections again:

- a fleet of ``--gateways`` uplinks on one event loop (benchmarks/fleet.py): the histogram of
  reconnect times (are they spread over the jitter window, or in lock-step?) and of the first
  acknowledged record; every record is checked to have reached the platform;
- a single gateway over ``--single-rounds`` outages: the median time to its first record
  (target ≤ 3 s).

The broker is Debian's Mosquitto on loopback with persistence; the outage lasts ``--outage`` s
(long enough for the back-off window to reach its ceiling). Usage:
``python benchmarks/bench_fleet.py [--gateways 200] [--outage 12] [--single-rounds 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # run as a script: its sibling module
from fleet import FleetResult, histogram, run_fleet

from agent.config import UplinkConfig
from provisioning.localbroker import LocalBroker, find_mosquitto


def _run(broker: LocalBroker, n: int, max_s: float, outage_s: float) -> FleetResult:
    return asyncio.run(
        run_fleet(host=broker.host, port=broker.port, gateways=n, reconnect_min_s=0.5,
                  reconnect_max_s=max_s, stop_broker=broker.stop, start_broker=broker.start,
                  outage_s=outage_s, timeout_s=max_s * 4 + 60)
    )  # fmt: skip


def _q(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gateways", type=int, default=200)
    ap.add_argument("--outage", type=float, default=12.0, help="seconds the broker is down")
    ap.add_argument("--single-rounds", type=int, default=5)
    args = ap.parse_args(argv)
    logging.getLogger("agent.uplink").setLevel(logging.ERROR)  # 200 × "connect failed"
    binary = find_mosquitto()
    if binary is None:
        print("mosquitto not found (apt install mosquitto)", file=sys.stderr)
        return 1
    default_max = UplinkConfig().reconnect_max_s
    settings = [(default_max, "default"), (30.0, "former default")]
    rows: list[tuple[str, ...]] = []
    hists: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        broker = LocalBroker(Path(tmp) / "broker", binary=binary)
        with broker.conf_file.open("a") as conf:  # the platform's queue must hold the outage
            conf.write("max_queued_messages 0\nmax_queued_bytes 0\n")
        broker.start()
        try:
            for max_s, label in settings:
                fleet = _run(broker, args.gateways, max_s, args.outage)
                singles = [
                    _run(broker, 1, max_s, args.outage).first_ack_s[0]
                    for _ in range(args.single_rounds)
                ]
                r, f = fleet.reconnect_s, fleet.first_ack_s
                rows.append((
                    f"reconnect_max_s {max_s:g} ({label})",
                    f"{statistics.median(singles):.2f} s",
                    f"{min(singles):.2f}–{max(singles):.2f} s",
                    f"{statistics.median(f):.2f} s",
                    f"{_q(f, 0.95):.2f} s",
                    f"{min(r):.2f}–{max(r):.2f} s",
                    f"{fleet.delivered}/{fleet.expected}",
                ))  # fmt: skip
                hists.append(f"fleet of {args.gateways}, reconnect_max_s {max_s:g}: "
                             "seconds from broker back to CONNACK")  # fmt: skip
                hists += histogram(r)
        finally:
            broker.stop()
    print(
        f"bench_fleet: {platform.node()} · {platform.machine()} · {os.cpu_count()} CPUs · "
        f"Python {platform.python_version()} · {platform.platform()}"
    )
    print(
        f"Mosquitto on loopback (persistence), outage {args.outage:g} s, reconnect_min_s 0.5, "
        f"full jitter; single gateway: {args.single_rounds} rounds; fleet: {args.gateways} "
        "uplinks on one event loop"
    )
    header = ("back-off", "single: first data (median)", "single: range",
              "fleet: first data median", "fleet: p95", "fleet: CONNACK spread",
              "records delivered")  # fmt: skip
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    print(f"target: single gateway first data ≤ 3 s (median); ratio former/default "
          f"{float(rows[1][1][:-2]) / max(float(rows[0][1][:-2]), 1e-9):.1f}×")  # fmt: skip
    print()
    print("\n".join(hists))
    return 0


if __name__ == "__main__":
    sys.exit(main())
