"""``safeedge simulate``: run the simulated tank farm (a Modbus TCP server) until stopped.

Prints one line when listening (address and register map), then serves until SIGINT/SIGTERM
(exit 0). ``--rtu`` adds a Modbus RTU analyser and ``--gas`` an ASCII gas controller, each on a
pseudo-terminal whose path is printed (``rtu: PATH`` / ``gas: PATH``); ``--config-out FILE``
writes the agent config for everything started, with those paths. ``--print-config`` prints
the matching agent config (TCP only) instead and exits. Exit 1 when a port cannot be opened,
2 for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from provisioning.simulator import (
    CYCLE_S,
    LEAK_START_S,
    REGISTER_MAP,
    TankFarmSimulator,
    register_map_summary,
    tank_farm_config,
)
from provisioning.simulator_serial import GasControllerSimulator, RtuAnalyserSimulator

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "simulate",
        help="run a simulated tank farm (Modbus TCP) with a gas leak scenario",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=int, default=5020, help="Modbus TCP port (5020)")
    p.add_argument("--unit-id", type=int, default=1, help="Modbus unit id (1)")
    p.add_argument("--seed", type=int, default=1, help="scenario seed (1)")
    p.add_argument(
        "--time-scale", type=float, default=1.0, help="scenario seconds per second (1.0)"
    )
    p.add_argument(
        "--leak-start-s",
        type=float,
        default=LEAK_START_S,
        help=f"leak start within each {CYCLE_S:g} s cycle ({LEAK_START_S:g})",
    )
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the agent config for this site and exit",
    )
    p.add_argument("--rtu", action="store_true", help="also run a Modbus RTU analyser on a pty")
    p.add_argument("--gas", action="store_true", help="also run an ASCII gas controller on a pty")
    p.add_argument("--config-out", help="write the agent config for what runs to this file")
    p.add_argument("--mqtt-host", default="127.0.0.1", help="for --print-config (127.0.0.1)")
    p.add_argument("--mqtt-port", type=int, default=1883, help="for --print-config (1883)")
    p.add_argument(
        "--data-dir", default=".safeedge-data", help="for --print-config (.safeedge-data)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.print_config:
        sys.stdout.write(
            tank_farm_config(
                modbus_host=args.host,
                modbus_port=args.port,
                mqtt_host=args.mqtt_host,
                mqtt_port=args.mqtt_port,
                data_dir=args.data_dir,
            )
        )
        return 0
    try:
        sim = TankFarmSimulator(
            host=args.host,
            port=args.port,
            unit_id=args.unit_id,
            seed=args.seed,
            time_scale=args.time_scale,
            leak_start_s=args.leak_start_s,
        )
    except ValueError as exc:
        print(f"safeedge simulate: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(sim, args))
    except OSError as exc:
        print(f"safeedge simulate: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve(sim: TankFarmSimulator, args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    rtu = RtuAnalyserSimulator(seed=sim.seed, time_scale=sim.time_scale) if args.rtu else None
    gas = GasControllerSimulator(seed=sim.seed, time_scale=sim.time_scale) if args.gas else None
    try:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(sim)
            for extra in (rtu, gas):
                if extra is not None:
                    await stack.enter_async_context(extra)
            if rtu is not None:
                print(f"rtu: {rtu.agent_path} (unit 2; input 0 AT-201 H2S, 1 AT-202 O2)")
            if gas is not None:
                print(f"gas: {gas.agent_path} (pushes $GAS,<ch>,<%LEL>,LEL*<xor> lines)")
            if args.config_out:
                with open(args.config_out, "w", encoding="utf-8") as f:  # noqa: ASYNC230
                    f.write(
                        tank_farm_config(
                            modbus_host=sim.host,
                            modbus_port=sim.port,
                            mqtt_host=args.mqtt_host,
                            mqtt_port=args.mqtt_port,
                            data_dir=args.data_dir,
                            rtu_path=rtu.agent_path if rtu else None,
                            gas_path=gas.agent_path if gas else None,
                            outputs=True,
                        )
                    )
            print(
                f"safeedge simulate: tank farm on {sim.host}:{sim.port} unit {sim.unit_id} "
                f"({len(REGISTER_MAP)} points, seed {sim.seed}, time scale {sim.time_scale:g}, "
                f"leak on GT-102 at {sim.leak_start_s:g} s every {sim.cycle_s:g} s) — "
                f"{register_map_summary()}",
                flush=True,
            )
            await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(sig)
