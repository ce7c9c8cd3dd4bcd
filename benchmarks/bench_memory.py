"""Where the agent's memory goes: resident set size after each part of the stack is loaded.

Each step runs in ONE fresh interpreter, in the order the agent loads things, so a row is what
that part adds on top of the rows above it (shared dependencies count where first loaded). The
baseline is the bare interpreter measured in the same run. The last rows load the rule kernels
from numba's on-disk cache (warmed first) and build a runtime for a 10,000-tag config without
I/O, which is what a running agent holds before its buffers fill.

Usage: ``python benchmarks/bench_memory.py``. Prints a table and the machine it ran on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_agent import machine  # noqa: E402

STEPS: list[tuple[str, str]] = [
    ("numpy", "import numpy"),
    ("msgspec", "import msgspec, msgspec.json, msgspec.toml"),
    ("cryptography (AES-GCM, SM4, Ed25519)",
     "from cryptography.hazmat.primitives.ciphers import aead, Cipher\n"
     "from cryptography.hazmat.primitives.asymmetric import ed25519"),
    ("sqlite3 + sqlite-utils", "import sqlite3, sqlite_utils"),
    ("paho-mqtt", "import paho.mqtt.client"),
    ("pyserial (the agent's Modbus client is its own: no pymodbus)", "import serial"),
    ("agent config, drivers, buffer, uplink (no numba)",
     "import agent.config, agent.uplink, agent.forwarder, drivers, buffer"),
    ("numba + llvmlite", "import numba"),
    ("rule kernels loaded from the cache", "from rules import RuleEngine\n"
     "RuleEngine(['T'], []).warm_up()"),
    ("runtime built for 10,000 tags on 40 devices (no I/O)", "BUILD"),
]  # fmt: skip

_PROBE = r"""
import json, sys, time
def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
out = [rss()]
for code in json.loads(sys.argv[1]):
    if code == "BUILD":
        from pathlib import Path
        from agent.config import load_config, resolved_paths
        from agent.runtime.build import build
        cfg_path = Path(sys.argv[2])
        cfg = load_config(cfg_path)
        comps = build(cfg, resolved_paths(cfg, cfg_path), password=None, clock_ms=lambda: 0)
    else:
        exec(code)
    out.append(rss())
print(json.dumps(out))
"""


def main() -> None:
    from benchmarks.bench_agent import agent_config

    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as d:
        cfg = agent_config(Path(d), [5020 + i for i in range(40)], 250, 1883, 1.0)
        env = {**os.environ}
        env.setdefault("NUMBA_CACHE_DIR", str(REPO / ".cache/numba"))
        subprocess.run(
            [sys.executable, "-m", "agent", "warm-cache", "--cache-dir", env["NUMBA_CACHE_DIR"]],
            check=True, capture_output=True, env=env,
        )  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-c", _PROBE, json.dumps([c for _, c in STEPS]), str(cfg)],
            capture_output=True, text=True, check=True, env=env, cwd=REPO,
        )  # fmt: skip
    rss = json.loads(done.stdout)
    print("| what is loaded | adds MB | RSS MB |")
    print("|---|---|---|")
    print(f"| bare interpreter (baseline) | – | {rss[0]:.1f} |")
    for (name, _), before, after in zip(STEPS, rss[:-1], rss[1:], strict=True):
        print(f"| {name} | {after - before:+.1f} | {after:.1f} |")
    numba_cost = rss[9] - rss[7]
    print(f"numba + compiled kernels: {numba_cost:.1f} MB, {100 * numba_cost / rss[-1]:.0f} % of "
          f"the total: what a site without rules would save if it never loaded them")  # fmt: skip


if __name__ == "__main__":
    main()
