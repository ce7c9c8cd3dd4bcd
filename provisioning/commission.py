"""The go/no-go checks of ``safeedge commission``: the gateway as it will run, checked on site.

Every check yields one :class:`Check`: ``PASS``, ``WARN`` or ``FAIL``, with the evidence it
saw and the fix. The report is *go* when no check FAILs. A check that cannot run because an
earlier one failed (no valid config: nothing else can be judged) is a FAIL that says so, never
silently left out, so the list of check ids is the same in every report (:data:`CHECK_IDS`).

Local checks live here: config, set points (:mod:`agent.setpoints`), devices and tags (one
probe, :mod:`provisioning.probe`), buffer path, key permissions, capacity, rule kernels, the
systemd unit. The network ones (clock, broker, ACL, certificate) are in
:mod:`provisioning.commission_net`.
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from agent.codec import telemetry_body
from agent.config import (
    AgentConfig,
    ConfigError,
    ResolvedPaths,
    file_issues,
    load_config,
    resolved_paths,
)
from agent.setpoints import setpoint_findings
from drivers.errors import DriverConfigError
from provisioning.probe import ProbeReport, probe_config

__all__ = [
    "CHECK_IDS",
    "Check",
    "Options",
    "Status",
    "capacity_check",
    "kernel_check",
    "key_permission_check",
    "local_checks",
    "service_user",
    "systemd_check",
]

Status = Literal["PASS", "WARN", "FAIL"]
CHECK_IDS = (
    "config.valid",
    "setpoints.ceilings",
    "setpoints.units",
    "devices.answer",
    "tags.good",
    "tags.plausible",
    "devices.refused",
    "buffer.writable",
    "keys.permissions",
    "buffer.capacity",
    "rules.kernels",
    "clock.offset",
    "broker.tls",
    "broker.publish_own",
    "broker.acl",
    "cert.expiry",
    "systemd.unit",
)
_MIB = 1024 * 1024
_RECORD_OVERHEAD = 64 + 12 + 16  # the store's per-record accounting + nonce + AEAD tag


@dataclass(frozen=True, slots=True)
class Check:
    id: str
    title: str
    status: Status
    evidence: str
    fix: str = ""


@dataclass(frozen=True, slots=True)
class Options:
    """Where to look on this gateway (defaults: what install.sh sets up)."""

    unit_file: Path = Path("/etc/systemd/system/safeedge.service")
    numba_cache_dir: Path = Path("/var/cache/safeedge/numba")
    ntp_servers: tuple[str, ...] = ()
    max_clock_offset_s: float = 2.0
    cert_warn_days: float = 30.0
    max_exposure: float = 7.0  # systemd-analyze: above this the unit is "EXPOSED"
    skip: frozenset[str] = frozenset()  # check ids not run (reported as WARN "skipped")


@dataclass(slots=True)
class Context:
    config_path: Path
    options: Options
    cfg: AgentConfig | None = None
    paths: ResolvedPaths | None = None
    probe: ProbeReport | None = None
    checks: list[Check] = field(default_factory=list)


def _check(ctx: Context, cid: str, title: str, fn: Callable[[], Check | None]) -> None:
    """Run one check unless skipped; a crash inside it is its FAIL, not the report's end."""
    if cid in ctx.options.skip:
        ctx.checks.append(Check(cid, title, "WARN", "skipped (--skip)", "run it before go-live"))
        return
    try:
        result = fn()
    except Exception as exc:  # one broken check must not hide the others
        result = Check(cid, title, "FAIL", f"the check itself failed: {exc!r}", "report this")
    if result is not None:
        ctx.checks.append(result)


def local_checks(ctx: Context) -> None:
    """Config, set points, field, storage, kernels (in :data:`CHECK_IDS` order)."""
    try:
        ctx.cfg = load_config(ctx.config_path)
        ctx.paths = resolved_paths(ctx.cfg, ctx.config_path)
        missing = file_issues(ctx.cfg)  # what `safeedge run` refuses to start without
        if missing:
            ev = "; ".join(f"{i.path}: {i.message}" for i in missing)
            ctx.checks.append(
                Check(
                    "config.valid",
                    "config valid",
                    "FAIL",
                    ev,
                    "install the files it names (safeedge identity install)",
                )
            )
        else:
            ctx.checks.append(
                Check(
                    "config.valid",
                    "config valid",
                    "PASS",
                    f"{ctx.config_path}, and every file it names exists",
                )
            )
    except ConfigError as exc:
        lines = str(exc).splitlines()
        ctx.checks.append(
            Check(
                "config.valid",
                "config valid",
                "FAIL",
                "; ".join(lines[:10]),
                f"fix the config: safeedge check-config {ctx.config_path}",
            )
        )
        return
    cfg, paths = ctx.cfg, ctx.paths
    _setpoint_checks(ctx, cfg)
    _field_checks(ctx, cfg)
    _check(ctx, "buffer.writable", "buffer path writable", lambda: _writable(paths))
    _check(
        ctx,
        "keys.permissions",
        "key files only readable by their owner",
        lambda: key_permission_check(paths, service_user(ctx.options.unit_file)),
    )
    _check(
        ctx,
        "buffer.capacity",
        "capacity for the retention at the configured rates",
        lambda: capacity_check(cfg, paths),
    )
    _check(
        ctx,
        "rules.kernels",
        "rule kernels compiled and cached",
        lambda: kernel_check(cfg, ctx.options.numba_cache_dir),
    )


def _setpoint_checks(ctx: Context, cfg: AgentConfig) -> None:
    findings = setpoint_findings(cfg)
    fails = [f for f in findings if f.severity == "fail"]
    warns = [f for f in findings if f.severity == "warn"]
    title = "set points within the templates' regulatory ceilings"
    if fails:
        ev = "; ".join(f"{f.path}: {f.message}" for f in fails)
        ctx.checks.append(
            Check(
                "setpoints.ceilings",
                title,
                "FAIL",
                ev,
                "; ".join(dict.fromkeys(f.hint for f in fails)),
            )
        )
    else:
        ev = f"{sum(1 for r in cfg.rules if r.template)} templated rule tables checked"
        ctx.checks.append(Check("setpoints.ceilings", title, "PASS", ev))
    title = "tag units match their templates"
    if warns:
        ev = "; ".join(f"{f.path}: {f.message}" for f in warns)
        ctx.checks.append(
            Check(
                "setpoints.units",
                title,
                "WARN",
                ev,
                "; ".join(dict.fromkeys(f.hint for f in warns)),
            )
        )
    else:
        ctx.checks.append(Check("setpoints.units", title, "PASS", "every templated tag"))


def _field_checks(ctx: Context, cfg: AgentConfig) -> None:
    ids = ("devices.answer", "tags.good", "tags.plausible", "devices.refused")
    if "devices.answer" in ctx.options.skip:
        for cid in ids:
            _check(ctx, cid, cid, lambda: None)
        return
    try:
        ctx.probe = probe = probe_config(cfg)
    except DriverConfigError as exc:
        for cid in ids:
            ctx.checks.append(
                Check(cid, cid, "FAIL", f"devices cannot be built: {exc}", "fix the device config")
            )
        return
    silent = [d for d in probe.devices if not d.answered]
    ev = f"{len(probe.devices) - len(silent)} of {len(probe.devices)} answered"
    if silent:
        ev += ": " + "; ".join(f"{d.device}: {d.error}" for d in silent)
        fix = "check wiring, address, unit id and line settings (safeedge scan)"
        ctx.checks.append(Check("devices.answer", "every device answers", "FAIL", ev, fix))
    else:
        worst = max((d.rtt_ms for d in probe.devices if math.isfinite(d.rtt_ms)), default=0.0)
        ctx.checks.append(
            Check(
                "devices.answer",
                "every device answers",
                "PASS",
                f"{ev}; slowest request {worst:.0f} ms",
            )
        )
    bad = [t for t in probe.tags if t.quality != "good"]
    ev = f"{len(probe.tags) - len(bad)} of {len(probe.tags)} good, {probe.requests} requests"
    if bad:
        ev += ": " + "; ".join(f"{t.tag} {t.quality} ({t.reason})" for t in bad[:20])
        ctx.checks.append(
            Check(
                "tags.good",
                "every tag reads good",
                "FAIL",
                ev,
                "safeedge probe shows each tag's raw registers and reason",
            )
        )
    else:
        ctx.checks.append(Check("tags.good", "every tag reads good", "PASS", ev))
    odd = [t for t in probe.tags if t.plausible is False]
    judged = sum(1 for t in probe.tags if t.plausible is not None)
    if odd:
        ev = "; ".join(
            f"{t.tag} = {t.value:g} {t.unit} outside {t.plausible_span}"
            for t in odd
            if t.value is not None
        )
        ctx.checks.append(
            Check(
                "tags.plausible",
                "values plausible for their templates",
                "WARN",
                ev,
                "check scale, offset, byte order and the sensor's zero",
            )
        )
    else:
        ctx.checks.append(
            Check(
                "tags.plausible",
                "values plausible for their templates",
                "PASS",
                f"{judged} tags judged against their template's span",
            )
        )
    refused = [f"{d.device}: {r}" for d in probe.devices for r in d.refused]
    if refused:
        ctx.checks.append(
            Check(
                "devices.refused",
                "no refused addresses",
                "FAIL",
                "; ".join(refused),
                "fix the address, or add an [[devices.exclude]] entry",
            )
        )
    else:
        ctx.checks.append(
            Check("devices.refused", "no refused addresses", "PASS", "no exception responses")
        )


def _writable(paths: ResolvedPaths) -> Check:
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
import json, time
t = time.perf_counter()
from rules import RuleEngine
from rules.config import RuleConfig
RuleEngine(["x"], [RuleConfig(tags=("x",), high=1.0)]).warm_up()
print(json.dumps({"s": time.perf_counter() - t}))
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
    cached = sorted(p.name for p in cache_dir.rglob("kernels*.nbi")) if cache_dir.exists() else []
    ev = (
        f"{len(cached)} kernels cached in {cache_dir}; first start {times[0]:.2f} s, "
        f"cached start {times[1]:.2f} s"
    )
    if not cached:
        return Check(
            "rules.kernels",
            title,
            "FAIL",
            ev,
            f"make {cache_dir} writable by the agent (CacheDirectory= in the unit)",
        )
    return Check("rules.kernels", title, "PASS", ev)


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


def ordered(checks: Sequence[Check]) -> list[Check]:
    """Checks in :data:`CHECK_IDS` order, a FAIL "not run" for each id that is missing."""
    by_id = {c.id: c for c in checks}
    out = []
    for cid in CHECK_IDS:
        c = by_id.get(cid)
        if c is None:
            c = Check(
                cid,
                cid,
                "FAIL",
                "not run: an earlier check failed (config)",
                "fix the failing checks above and run commission again",
            )
        out.append(c)
    return out
