"""The gateway's own checks for ``safeedge commission``: buffer folder, key files, capacity,
rule kernels, the systemd unit. Each returns one :class:`~provisioning.commission_model.Check`.
"""

from __future__ import annotations

import json
import math
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

from agent.codec import telemetry_body
from agent.config import AgentConfig, ResolvedPaths
from provisioning.commission_model import Check

__all__ = [
    "capacity_check",
    "kernel_check",
    "key_permission_check",
    "service_user",
    "systemd_check",
    "writable_check",
]

_MIB = 1024 * 1024
_RECORD_OVERHEAD = 64 + 12 + 16  # the store's per-record accounting + nonce + AEAD tag


def writable_check(paths: ResolvedPaths) -> Check:
    title = "buffer path writable"
    folder = paths.buffer_path.parent
    probe_dir = folder
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        probe_dir = probe_dir.parent  # the agent creates missing folders (mode 0700)
    try:
        with tempfile.NamedTemporaryFile(dir=probe_dir, prefix=".commission-") as f:
            f.write(b"x")
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        return Check(
            "buffer.writable",
            title,
            "FAIL",
            f"{probe_dir}: {exc.strerror}",
            f"create {folder} writable by the agent's user (install.sh does)",
        )
    return Check("buffer.writable", title, "PASS", f"{probe_dir} accepts a synced write")


def service_user(unit_file: Path) -> str | None:
    """``User=`` of the unit file (None: no unit file, or no User= line)."""
    try:
        lines = unit_file.read_text().splitlines()
    except OSError:
        return None
    users = [ln.split("=", 1)[1].strip() for ln in lines if ln.strip().startswith("User=")]
    return users[-1] if users else None


def key_permission_check(paths: ResolvedPaths, user: str | None = None) -> Check:
    """Buffer key and TLS key: a file readable by group or others is a FAIL; so is a key the
    service ``user`` (when it exists on this machine) does not own: it could not read it."""
    title = "key files only readable by their owner"
    uid = None
    if user is not None:
        try:
            uid = pwd.getpwnam(user).pw_uid
        except KeyError:
            uid = None  # not created yet (install.sh makes it); the modes are still checked
    seen, loose = [], []
    for what, path in (("buffer key", paths.buffer_key_file), ("TLS key", paths.tls_key_file)):
        if path is None or not path.exists():
            if what == "buffer key":
                seen.append(f"{what} {path} not yet created (the agent makes it, mode 0600)")
            continue
        st = path.stat()
        mode = stat.S_IMODE(st.st_mode)
        seen.append(f"{what} {path} {mode:04o}")
        if mode & 0o077:
            loose.append(f"{what} {path} is {mode:04o}")
        elif uid is not None and st.st_uid != uid:
            loose.append(f"{what} {path} is not owned by {user}: the agent could not read it")
    if loose:
        fix = f"chown {user or 'the agent user'} the file and chmod it 0600"
        return Check("keys.permissions", title, "FAIL", "; ".join(loose), fix)
    return Check("keys.permissions", title, "PASS", "; ".join(seen) or "no key files configured")


def capacity_check(cfg: AgentConfig, paths: ResolvedPaths) -> Check:
    """Telemetry bytes per day, estimated with the agent's own codec at the poll rates, against
    the capacity for the retention, and the disk's room for that capacity."""
    title = "capacity for the retention at the configured rates"
    per_day = 0.0
    for d in cfg.devices:
        points = [(t.name, 1_764_300_000_000, 12345.678, None) for t in d.tags]
        size = len(telemetry_body(points)) + _RECORD_OVERHEAD if points else 0
        per_day += size * 86400.0 / d.poll_interval_s
    buf = cfg.buffer
    days = buf.telemetry.retention_days or buf.retention_days
    cap = buf.telemetry.capacity_mb or buf.capacity_mb
    need_mb = per_day * days / _MIB
    ev = (
        f"telemetry ≈ {per_day / _MIB:.1f} MiB/day (upper bound: every sample sent); "
        f"{days:g} days need {need_mb:.0f} MiB; capacity {cap:g} MiB"
    )
    folder = paths.buffer_path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free_mb = shutil.disk_usage(folder).free / _MIB
    ev += f"; {free_mb:.0f} MiB free on {folder}"
    if need_mb > cap:
        return Check(
            "buffer.capacity",
            title,
            "FAIL",
            ev,
            f"raise [buffer] capacity_mb to {math.ceil(need_mb * 1.2)}, poll less "
            "often, or use report_by_exception",
        )
    if buf.capacity_mb > free_mb:
        return Check(
            "buffer.capacity",
            title,
            "WARN",
            ev,
            "the disk cannot hold the configured capacity: free space or lower it",
        )
    return Check("buffer.capacity", title, "PASS", ev)


_KERNEL_SCRIPT = """
import json, sys, time
t = time.perf_counter()
from rules import RuleEngine
from rules.config import RuleConfig
from agent.kernels import kernel_summary
from agent.shaping.stats import warm_up
RuleEngine(["x"], [RuleConfig(tags=("x",), high=1.0)]).warm_up()
warm_up()
k = kernel_summary()
print(json.dumps({"s": time.perf_counter() - t, "impl": k.impl, "reason": k.reason,
                  "numba": "numba" in sys.modules}))
"""


def kernel_check(cfg: AgentConfig, cache_dir: Path) -> Check:
    """Compile (or load) the kernels in a fresh process with the unit's ``NUMBA_CACHE_DIR``,
    then time a second, cached load: what the agent's start will cost."""
    title = "rule kernels compiled and cached"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir)}
    times = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", _KERNEL_SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
            return Check(
                "rules.kernels",
                title,
                "FAIL",
                f"warm-up failed: {tail[0]}",
                "check the numba install (the bundle's wheels for this CPU)",
            )
        times.append(float(json.loads(done.stdout.strip().splitlines()[-1])["s"]))
    last = json.loads(done.stdout.strip().splitlines()[-1])
    cached = sorted(p.name for p in cache_dir.rglob("kernels*.nbi")) if cache_dir.exists() else []
    timing = f"warm-up {times[0]:.2f} s, then {times[1]:.2f} s"
    if last["impl"] == "native" and not last["numba"]:
        ev = f"native kernels in {cache_dir}, loaded without numba; {timing}"
        return Check("rules.kernels", title, "PASS", ev)
    ev = (
        f"{len(cached)} JIT kernels cached in {cache_dir}; {timing} (compiled, or loaded if"
        f" already cached); no native kernels: {last['reason']}"
    )
    if not cached:
        return Check(
            "rules.kernels",
            title,
            "FAIL",
            ev,
            f"make {cache_dir} writable by the agent (CacheDirectory= in the unit)",
        )
    return Check(
        "rules.kernels",
        title,
        "WARN",
        ev,
        "install gcc and python3-dev, then run `safeedge warm-cache` as the service user: the"
        " agent then runs without numba (~145 MB less memory)",
    )


def systemd_check(unit_file: Path, max_exposure: float) -> Check:
    title = "systemd unit installed and hardened"
    if not unit_file.exists():
        return Check(
            "systemd.unit",
            title,
            "FAIL",
            f"{unit_file} not found",
            "install it: systemd/install.sh (or --from-bundle)",
        )
    tool = shutil.which("systemd-analyze")
    if tool is None:
        return Check(
            "systemd.unit",
            title,
            "WARN",
            f"{unit_file} installed; no systemd-analyze",
            "install systemd to score the unit",
        )
    done = subprocess.run(
        [tool, "security", "--offline=true", str(unit_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    last = (done.stdout.strip().splitlines() or [""])[-1]
    words = last.replace(":", " ").split()
    score = next((float(w) for w in words if _is_number(w)), math.nan)
    ev = f"{unit_file}: {last.strip() or done.stderr.strip()[:200]}"
    if not math.isfinite(score):
        return Check("systemd.unit", title, "WARN", ev, "score the unit by hand")
    if score > max_exposure:
        return Check(
            "systemd.unit",
            title,
            "WARN",
            ev,
            "harden the unit: systemd-analyze security lists what is open",
        )
    return Check("systemd.unit", title, "PASS", ev)


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True
