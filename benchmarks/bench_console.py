"""What the local web console costs the agent (issue 15 targets): CPU with browsers open and
its effect on poll jitter, on a 1,000-tag site.

The site: one Modbus TCP PLC with 1,000 holding-register tags (the pymodbus server of
benchmarks/bench_drivers.py, in its own process), polled every second by ``safeedge run`` in its
own process; uplink off; three tags above a level-1 limit so the board has rows. Scenarios,
each ``--seconds`` after the agent is ready:

- ``off``: console disabled (the baseline, same run, same machine);
- ``board``: console on, ``--browsers`` (3) headless chromium browsers on the alarm board;
- ``live``: console on, the browsers on the live values (1,000 rows, sparklines, 1 Hz).

Reported per scenario: the agent process's CPU (utime + stime from /proc, % of one core), the
difference to ``off`` (what the console costs), and the poll period's jitter from the
timestamps of tag t0 in the telemetry the agent stored (p50 / p99 / max of |period - 1 s|), and
the browsers' own CPU (chromium and its children, from /proc) which competes with the agent.

Run: ``.venv/bin/python benchmarks/bench_console.py [--seconds 20]`` (about 1.5 min). Needs
Debian's chromium and chromium-driver. The browsers run on the same machine as the agent (a
control room's screens would not), so on a small box their rendering competes with the polls
for CPU. Not a test: the numbers depend on the machine (and on what else runs on it).
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_drivers import start_server

from agent.codec import decode_telemetry
from agent.codec_v2 import body_version, decode_telemetry_v2
from agent.console.passwords import hash_password
from buffer import Store
from buffer.record import Stream
from provisioning.localbroker import free_port

N_TAGS = 1000
TICK = os.sysconf("SC_CLK_TCK")


def config(data: Path, plc_port: int, console_port: int | None) -> str:
    lines = [
        "[gateway]", 'site = "BENCH"', 'id = "GW1"', f'data_dir = "{data}"',
        "[uplink]", "enabled = false",
        "[[devices]]", 'driver = "modbus_tcp"', 'name = "plc"', 'host = "127.0.0.1"',
        f"port = {plc_port}", "unit_id = 1", "poll_interval_s = 1.0", "timeout_s = 0.5",
    ]  # fmt: skip
    for i in range(N_TAGS):
        lines += ["[[devices.tags]]", f'name = "t{i}"', 'table = "holding"', f"address = {i}",
                  'type = "uint16"', 'unit = "ppm"']  # fmt: skip
    lines += ["[[rules]]", 'tags = ["t0", "t1", "t2"]', "high = 5.0", "high_high = 50.0"]
    lines += ["[[rules]]", 'match = "t1??"', "high = 500.0"]
    if console_port is not None:
        lines += [
            "[console]",
            "enabled = true",
            f"port = {console_port}",
            "anonymous_board = true",
            "[[console.users]]",
            'name = "bench"',
            'role = "viewer"',
            f'password_hash = "{hash_password("bench-pass")}"',
        ]
    return "\n".join(lines) + "\n"


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def tree_cpu_s(roots: list[int]) -> float:
    """CPU seconds of ``roots`` and all their descendants (the browsers' processes)."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    pids, todo = set(roots), list(roots)
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p and c not in pids]
        pids.update(kids)
        todo.extend(kids)
    total = 0.0
    for p in pids:
        try:
            total += cpu_s(p)
        except (OSError, IndexError, ValueError):
            continue
    return total


def browsers(url: str, page: str, n: int) -> list[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    out = []
    for _ in range(n):
        opts = webdriver.ChromeOptions()
        opts.binary_location = "/usr/bin/chromium"
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu"):
            opts.add_argument(arg)
        d = webdriver.Chrome(options=opts, service=Service("/usr/bin/chromedriver"))
        if page == "live":
            d.get(url + "login")
            d.find_element(By.NAME, "user").send_keys("bench")
            d.find_element(By.NAME, "password").send_keys("bench-pass")
            d.find_element(By.CSS_SELECTOR, "#login button").click()
            time.sleep(0.5)
        d.get(url + ("live" if page == "live" else ""))
        assert d.find_elements(By.ID, page), f"the {page} page did not load"
        out.append(d)
    return out


def jitter_ms(data: Path, window_ms: tuple[int, int]) -> tuple[float, float, float]:
    """|period - 1 s| of tag t0's samples taken inside the measured window (browser start-up,
    which competes for the CPU on a small box, is outside it)."""
    with Store.open(path=data / "buffer.db", key_file=data / "buffer.key",
                    gateway_id="GW1") as s:  # fmt: skip
        last = s.stats().streams[Stream.TELEMETRY].last_seq
        records = s.resend(Stream.TELEMETRY, 1, last) if last else []
    lo, hi = window_ms
    ts = sorted(
        {
            p.ts
            for r in records
            for p in (
                decode_telemetry_v2(r.payload)
                if body_version("telemetry", r.payload) == 2
                else decode_telemetry(r.payload)
            )
            if p.tag == "t0" and lo <= p.ts <= hi
        }
    )
    dev = [abs(b - a - 1000) for a, b in itertools.pairwise(ts)]
    if not dev:
        return (float("nan"),) * 3
    dev.sort()
    return statistics.median(dev), dev[int(0.99 * (len(dev) - 1))], dev[-1]


def scenario(
    name: str, seconds: float, plc_port: int, n_browsers: int, settle_s: float
) -> tuple[str, float, tuple[float, ...]]:
    work = Path(tempfile.mkdtemp(prefix="bench-console-"))
    console_port = None if name == "off" else free_port()
    (work / "agent.toml").write_text(config(work / "data", plc_port, console_port))
    try:
        with (work / "agent.log").open("wb") as log:
            return _run(name, work, (settle_s, seconds), console_port, n_browsers, log)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(
    name: str,
    work: Path,
    timing: tuple[float, float],
    console_port: int | None,
    n_browsers: int,
    log: IO[bytes],
) -> tuple[str, float, tuple[float, ...]]:
    settle_s, seconds = timing
    env = dict(os.environ)
    cmd = [sys.executable, "-m", "agent", "run", "--config", str(work / "agent.toml")]
    agent = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
    opened: list[object] = []
    try:
        deadline = time.monotonic() + 90
        while b" ready " not in (work / "agent.log").read_bytes():
            if time.monotonic() > deadline or agent.poll() is not None:
                raise RuntimeError((work / "agent.log").read_text()[-2000:])
            time.sleep(0.1)
        if console_port is not None:
            opened = browsers(f"http://127.0.0.1:{console_port}/", name.split()[0], n_browsers)
        time.sleep(settle_s)  # pages loaded and streaming
        roots = [d.service.process.pid for d in opened]  # type: ignore[attr-defined]
        c0, t0, w0 = cpu_s(agent.pid), time.monotonic(), time.time_ns() // 1_000_000
        b0 = tree_cpu_s(roots)
        time.sleep(seconds)
        elapsed = time.monotonic() - t0
        cpu = (cpu_s(agent.pid) - c0) / elapsed * 100
        browser_cpu = (tree_cpu_s(roots) - b0) / elapsed * 100
        w1 = time.time_ns() // 1_000_000
    finally:
        for d in opened:
            d.quit()  # type: ignore[attr-defined]
        agent.terminate()
        agent.wait(30)
    return name, cpu, (browser_cpu, *jitter_ms(work / "data", (w0, w1)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--browsers", type=int, default=3, help="per console scenario")
    ap.add_argument("--settle-s", type=float, default=2.0, help="after the pages opened")
    ap.add_argument("--scenarios", nargs="+", choices=["off", "board", "live"],
                    default=["off", "board", "live"])  # fmt: skip
    args = ap.parse_args(argv)
    plc_port = free_port()
    plc = start_server("tcp", str(plc_port), N_TAGS + 8)
    try:
        time.sleep(1.5)
        rows = [
            scenario(s, args.seconds, plc_port, args.browsers, args.settle_s)
            for s in args.scenarios
        ]
    finally:
        plc.terminate()
        plc.wait(10)
    cpus = os.cpu_count()
    print(f"machine: {platform.machine()} {cpus} cores, Python {platform.python_version()}, "
          f"{N_TAGS} tags polled at 1 s, {args.seconds:g} s per scenario")  # fmt: skip
    base = rows[0][1] if rows[0][0] == "off" else float("nan")
    print(
        "| scenario | agent CPU % of a core | console's share | browsers' CPU % "
        "| jitter p50 ms | p99 ms | max ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, cpu, (bcpu, p50, p99, mx) in rows:
        shown = name if name == "off" else f"{name} x{args.browsers}"
        print(
            f"| {shown} | {cpu:.2f} | {cpu - base:+.2f} | {bcpu:.1f} | {p50:.0f} | {p99:.0f} "
            f"| {mx:.0f} |"
        )
    print("targets: console's share <= 2 % of a core with 3 browsers; jitter like 'off'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
