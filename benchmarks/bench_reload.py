"""Reload benchmark: what a SIGHUP costs the polling, per edit, on two trees in the same run.

For each tree (``--trees``: worktrees with their own ``.venv``; the first is the one measured,
the others are baselines, e.g. ``/work/main``) and each edit, rounds interleaved: the real agent
(``<tree>/.venv/bin/python -m agent run``) reads a gas controller on a pty (poll 0.5 s, a rule,
uplink to a Mosquitto of its own); after a steady few seconds the config file is
edited and SIGHUP sent; after a few more seconds the agent is stopped and its buffer read back.

Measured from the agent's own telemetry (the poll timestamps of GT-301) and log, with the uplink
to a real Mosquitto: the longest gap between two polls in the window around the SIGHUP (the poll
period is 0.5 s: a gap well above it means the device was closed and reopened, or the whole
agent ran again), the time from the
SIGHUP to the ``config_applied`` log line, the reload's mode (``in_place`` / ``restart``), how
often the devices became ready and the uplink connected (1 and 1: nothing was reopened).

Edits: ``rules`` (a limit: in place on every tree), ``policy`` (``[[uplink.tags]]`` precision:
the telemetry shaping), ``outputs``-free by design (they need a Modbus device: see
tests/agent/runtime/test_reload_live.py).

Usage: ``python benchmarks/bench_reload.py [--trees . /work/main] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from buffer.record import Stream  # noqa: E402
from tests.support.agentproc import GasLine, agent_config, records  # noqa: E402
from tests.support.mosquitto import Broker  # noqa: E402
from tests.support.telemetry import points_of  # noqa: E402

EDITS: dict[str, tuple[str, dict[str, float]]] = {
    "rules": ("", {"high": 28.0}),
    "policy": ('\n[[uplink.tags]]\ntags = ["GT-301"]\nprecision = 0\n', {}),
}
PERIOD_S = 0.5


def _config(data: Path, line: str, port: int, uplink_tags: str = "", high: float = 25.0) -> str:
    text = agent_config(data_dir=data, line=line, high=high, mqtt_port=port)
    return text.replace("[commands]\n", uplink_tags + "\n[commands]\n", 1)


def one(tree: Path, edit: str, steady_s: float) -> dict[str, object]:
    tags, kw = EDITS[edit]
    line = GasLine()
    line.value = 10.0
    with tempfile.TemporaryDirectory(prefix="bench-reload-") as tmp:
        broker = Broker(Path(tmp) / "broker")
        broker.start()
        data, config = Path(tmp) / "data", Path(tmp) / "agent.toml"
        config.write_text(_config(data, line.path, broker.port))
        log_path = Path(tmp) / "agent.log"
        env = {**os.environ, "NUMBA_CACHE_DIR": str(tree / ".cache/numba")}
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [str(tree / ".venv/bin/python"), "-m", "agent", "run", "--config", str(config)],
                stdout=subprocess.DEVNULL, stderr=log, env=env, cwd=tree,
            )  # fmt: skip
        try:
            _wait(lambda: " ready devices" in log_path.read_text(), 120)
            time.sleep(steady_s)
            config.write_text(_config(data, line.path, broker.port, tags, **kw))
            sent = time.time()
            proc.send_signal(signal.SIGHUP)
            _wait(lambda: "config_applied" in log_path.read_text(), 60)
            applied_s = time.time() - sent  # upper bound: the log is polled every 10 ms
            time.sleep(steady_s)
        finally:
            proc.terminate()
            proc.wait(30)
            line.close()
            broker.kill()
        text = log_path.read_text()
        ts = sorted(
            p[1] / 1000
            for body in records(data, Stream.TELEMETRY)
            for p in points_of(body)
            if p[0] == "GT-301"
        )
    around = [t for t in ts if sent - steady_s <= t <= sent + steady_s]
    gap = max((b - a for a, b in itertools.pairwise(around)), default=float("nan"))
    mode = re.search(r"config_applied .* mode=(\w+)", text)
    return {
        "tree": str(tree),
        "edit": edit,
        "mode": mode[1] if mode else "?",
        "applied_ms": round(applied_s * 1000),
        "max_gap_s": round(gap, 2),
        "readies": text.count(" ready devices"),
        "mqtt_connects": text.count("uplink_connected"),
    }


def _wait(cond: object, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        time.sleep(0.01)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trees", nargs="+", type=Path, default=[REPO])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--edits", nargs="+", choices=sorted(EDITS), default=sorted(EDITS))
    p.add_argument("--steady-s", type=float, default=4.0)
    p.add_argument("--json", action="store_true", help="one JSON object per run, no table")
    args = p.parse_args(argv)
    rows = []
    for _ in range(args.rounds):  # interleaved: tree A, tree B, tree A ... per edit
        for edit in args.edits:
            for tree in args.trees:
                row = one(tree.resolve(), edit, args.steady_s)
                rows.append(row)
                if args.json:
                    print(json.dumps(row), flush=True)
    if args.json:
        return 0
    print(f"{'tree':<28} {'edit':<7} {'mode':<9} {'applied ms':>10} {'max gap s':>10} "
          f"{'readies':>7} {'mqtt connects':>13}"
          f"   (poll period {PERIOD_S} s; median of {args.rounds})")  # fmt: skip
    for tree in args.trees:
        for edit in args.edits:
            mine = [r for r in rows if r["tree"] == str(tree.resolve()) and r["edit"] == edit]
            med = sorted(mine, key=lambda r: float(r["max_gap_s"]))[len(mine) // 2]  # type: ignore[arg-type]
            print(f"{tree!s:<28} {edit:<7} {med['mode']!s:<9} {med['applied_ms']!s:>10} "
                  f"{med['max_gap_s']!s:>10} {med['readies']!s:>7} "
                  f"{med['mqtt_connects']!s:>13}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
