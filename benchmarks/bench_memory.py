"""Where the agent's memory goes: resident set size after each part of the stack is loaded.

Each step runs in ONE fresh interpreter, in the order the agent loads things, so a row is what
that part adds on top of the rows above it (shared dependencies count where first loaded). The
baseline is the bare interpreter measured in the same run. The last rows load the rule kernels
from numba's on-disk cache (warmed first) and build a runtime for a 10,000-tag config without
I/O, which is what a running agent holds before its buffers fill: without the incident
recorder, and (in a second interpreter, the same steps) with it.

``RSS`` counts the resident pages of mapped files too (libllvmlite.so alone is 170 MB, and how
much of it is resident depends on the page cache); ``anon`` is the process's own memory
(RssAnon), the figure that does not move between two copies of one venv.

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

COMMON: list[tuple[str, str]] = [
    ("numpy", "import numpy"),
    ("msgspec", "import msgspec, msgspec.json, msgspec.toml"),
    ("cryptography (AES-GCM, SM4, Ed25519)",
     "from cryptography.hazmat.primitives.ciphers import aead, Cipher\n"
     "from cryptography.hazmat.primitives.asymmetric import ed25519"),
    ("sqlite3 (sqlite-utils is a dependency the running agent never imports)", "import sqlite3"),
    ("paho-mqtt", "import paho.mqtt.client"),
    ("pyserial (the agent's Modbus client is its own: no pymodbus)", "import serial"),
    ("agent config, drivers, buffer, uplink (no numba)",
     "import agent.config, agent.uplink, agent.forwarder, drivers, buffer"),
]  # fmt: skip
_KERNELS = (
    "from rules import RuleEngine\nRuleEngine(['T'], []).warm_up()\n"
    "from agent.shaping.stats import warm_up\nwarm_up()"
)
_BUILD = "runtime built for 10,000 tags on 40 devices, no incident recorder (no I/O)"
# SAFEEDGE_KERNELS=jit: numba's dispatchers, kernels from numba's on-disk cache
JIT_STEPS: list[tuple[str, str]] = [
    *COMMON,
    ("numba + llvmlite", "import numba"),
    ("rule and statistics kernels loaded from numba's cache", _KERNELS),
    (_BUILD, "BUILD"),
]  # fmt: skip
# SAFEEDGE_KERNELS=native: the modules safeedge warm-cache compiled with numba.pycc
NATIVE_STEPS: list[tuple[str, str]] = [
    *COMMON,
    ("rule and statistics kernels, native modules (numba is not imported)", _KERNELS),
    (_BUILD, "BUILD"),
]  # fmt: skip

_PROBE = r"""
import json, sys, time
def rss():
    got = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "RssAnon")):
                got[line.split(":")[0]] = int(line.split()[1]) / 1024
    return got["VmRSS"], got["RssAnon"]
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
        ports = [5020 + i for i in range(40)]
        os.environ.pop("BENCH_NO_RECORDER", None)
        with_recorder = agent_config(Path(d), ports, 250, 1883, 1.0).rename(Path(d) / "rec.toml")
        os.environ["BENCH_NO_RECORDER"] = "1"
        cfg = agent_config(Path(d), ports, 250, 1883, 1.0)
        env = {**os.environ}
        env.setdefault("NUMBA_CACHE_DIR", str(REPO / ".cache/numba"))
        subprocess.run(
            [sys.executable, "-m", "agent", "warm-cache", "--cache-dir", env["NUMBA_CACHE_DIR"]],
            check=True, capture_output=True, env=env,
        )  # fmt: skip

        def probe(steps: list[tuple[str, str]], path: Path, kernels: str) -> list[list[float]]:
            done = subprocess.run(
                [sys.executable, "-c", _PROBE, json.dumps([c for _, c in steps]), str(path)],
                capture_output=True, text=True, env={**env, "SAFEEDGE_KERNELS": kernels},
                cwd=REPO, check=False,
            )  # fmt: skip
            if done.returncode != 0:
                raise SystemExit(f"probe failed ({kernels}): {done.stderr[-2000:]}")
            out: list[list[float]] = json.loads(done.stdout)
            return out

        jit, jit_rec = (probe(JIT_STEPS, p, "jit") for p in (cfg, with_recorder))
        nat, nat_rec = (probe(NATIVE_STEPS, p, "native") for p in (cfg, with_recorder))
    for title, steps, rss, rec in (
        ("numba's JIT (SAFEEDGE_KERNELS=jit)", JIT_STEPS, jit, jit_rec),
        ("native kernels (SAFEEDGE_KERNELS=native, the default after warm-cache)", NATIVE_STEPS,
         nat, nat_rec),
    ):  # fmt: skip
        print(f"\n{title}")
        print("| what is loaded | adds MB | RSS MB | adds anon MB | anon MB |")
        print("|---|---|---|---|---|")
        print(f"| bare interpreter (baseline) | – | {rss[0][0]:.1f} | – | {rss[0][1]:.1f} |")
        rows = [(name, b, a) for (name, _), b, a in zip(steps, rss, rss[1:], strict=False)]
        rows.append(("runtime built for 10,000 tags on 40 devices with the incident recorder "
                     "(no I/O)", rss[-2], rec[-1]))  # fmt: skip
        for name, (b, b_anon), (a, a_anon) in rows:
            print(f"| {name} | {a - b:+.1f} | {a:.1f} | {a_anon - b_anon:+.1f} | {a_anon:.1f} |")
    n = len(COMMON)
    numba_cost = jit[n + 2][0] - jit[n][0]
    print(f"\nnumba + JIT kernels: {numba_cost:.1f} MB, {100 * numba_cost / jit[-1][0]:.0f} % of "
          f"the JIT runtime without the recorder; the native kernels add "
          f"{nat[n + 1][0] - nat[n][0]:.1f} MB instead")  # fmt: skip
    print(
        f"runtime for 10,000 tags: JIT {jit[-1][0]:.1f} MB (anon {jit[-1][1]:.1f}), native "
        f"{nat[-1][0]:.1f} MB (anon {nat[-1][1]:.1f}): native saves "
        f"{jit[-1][0] - nat[-1][0]:.1f} MB; with them no agent loads numba, with rules or without"
    )


if __name__ == "__main__":
    main()
