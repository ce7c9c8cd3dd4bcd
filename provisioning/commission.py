"""The go/no-go checks of ``safeedge commission``: the gateway as it will run, checked on site.

Every check yields one :class:`Check`: ``PASS``, ``WARN`` or ``FAIL``, with the evidence it
saw and the fix. The report is *go* when no check FAILs. A check that cannot run because an
earlier one failed (no valid config: nothing else can be judged) is a FAIL that says so, never
silently left out, so the list of check ids is the same in every report (:data:`CHECK_IDS`).

Here: the runner, config, set points (:mod:`agent.setpoints`), devices and tags (one probe,
:mod:`provisioning.probe`). The gateway's own checks (buffer path, key permissions, capacity,
rule kernels, systemd unit) are in :mod:`provisioning.commission_host`; the network ones
(clock, broker, ACL, certificate) in :mod:`provisioning.commission_net`; the vocabulary
(:class:`Check`, :data:`CHECK_IDS`, :class:`Options`) in :mod:`provisioning.commission_model`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

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
from provisioning.commission_host import (
    capacity_check,
    kernel_check,
    key_permission_check,
    service_user,
    systemd_check,
    writable_check,
)
from provisioning.commission_model import CHECK_IDS, Check, Options, Status
from provisioning.probe import ProbeReport, probe_config

__all__ = [  # the model and the host checks are re-exported: one place to import them from
    "CHECK_IDS",
    "Check",
    "Context",
    "Options",
    "Status",
    "capacity_check",
    "kernel_check",
    "key_permission_check",
    "local_checks",
    "ordered",
    "service_user",
    "systemd_check",
]


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
    _check(ctx, "buffer.writable", "buffer path writable", lambda: writable_check(paths))
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
