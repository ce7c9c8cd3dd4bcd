"""Config → components: the only module of the runtime that reads ``AgentConfig`` and
``ResolvedPaths``.

:func:`build` does no I/O (it may raise the drivers' and rules' config errors); the functions
below it open what needs I/O (the store, the command replay file) and are called by the run.
Everything they return is complete: no attribute is filled in later.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from agent import __version__
from agent.alarm_outputs import OutputPolicy
from agent.commands import CommandHandlers, CommandProcessor, ReplayStore, load_public_keys
from agent.commands.limits import TokenBucket
from agent.config import AgentConfig, ResolvedPaths
from agent.config.governance import TagPolicy, resolve_policies
from agent.forwarder import Forwarder
from agent.runtime.forwarding import LoopBridge
from agent.runtime.incidents import incident_recorder
from agent.shaping import TelemetryShaper
from agent.tags import TagTable, config_hash
from agent.telemetry import ExceptionFilter
from agent.uplink import Uplink

if TYPE_CHECKING:  # loaded only when [review.recorder] is on (agent/runtime/incidents.py)
    from agent.review.recorder import IncidentRecorder
from buffer import Store
from drivers import Device, OutputWriter, Quality, build_devices, build_output_writers
from rules import RuleEngine

__all__ = ["Components", "build", "command_processor", "forwarder", "open_store"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Components:
    """Everything a run needs, built from one config. Optional only where the config says so."""

    cfg: AgentConfig
    paths: ResolvedPaths
    clock_ms: Callable[[], int]
    config_hash: str
    tags: TagTable
    engine: RuleEngine
    buses: Mapping[str, tuple[Device, ...]]  # bus name → its devices (one poll task each)
    policies: tuple[TagPolicy, ...]  # by tag index: class, policy, precision, codes
    shaper: TelemetryShaper  # policy, precision, report-by-exception, stats, body encoding
    bridge: LoopBridge
    uplink: Uplink | None  # None: uplink.enabled = false (records stay in the buffer)
    commands_enabled: bool
    max_resend: int
    outputs: tuple[tuple[OutputWriter, OutputPolicy], ...] = ()  # [[outputs]], in config order
    incidents: IncidentRecorder | None = None  # None: [review.recorder] enabled = false

    @property
    def devices(self) -> tuple[Device, ...]:
        return tuple(d for bus in self.buses.values() for d in bus)


def build(
    cfg: AgentConfig,
    paths: ResolvedPaths,
    *,
    password: str | None,
    clock_ms: Callable[[], int],
) -> Components:
    """Build every component from the config, without I/O."""
    tags = TagTable(cfg)
    engine = RuleEngine(tags.names, cfg.rules)
    serial_ports = {p.name: p for p in cfg.serial_ports}
    buses: dict[str, list[Device]] = {}
    for dev_cfg in cfg.devices:
        for device in build_devices(  # one per poll group
            dev_cfg, tag_index=tags.index, serial_ports=serial_ports, clock_ms=clock_ms
        ):
            buses.setdefault(device.bus, []).append(device)
    up = cfg.uplink
    rbe = None
    if up.report_by_exception is not None:
        r = up.report_by_exception
        bands = np.array([r.deadbands.get(n, r.deadband) for n in tags.names])
        rbe = ExceptionFilter(bands, int(r.integrity_s * 1000))
    policies = tuple(resolve_policies(cfg, tags.names))
    shaper = TelemetryShaper(
        names=tags.names,
        policies=policies,
        qualities={int(q): q.wire_name for q in Quality if q},
        body=up.telemetry_body,
        max_points=up.telemetry_batch,
        max_bytes=up.telemetry_max_bytes,
        linger_ms=up.telemetry_linger_ms,
        rbe=rbe,
    )
    device_tags = {d.name: [t.name for t in d.tags] for d in cfg.devices}
    writers = build_output_writers(cfg.outputs, devices=cfg.devices, serial_ports=serial_ports)
    outputs = tuple(
        (w, OutputPolicy(o.when, tag_names=tags.names, device_tags=device_tags))
        for w, o in zip(writers, cfg.outputs, strict=True)
    )
    bridge = LoopBridge()
    uplink = None
    if up.enabled:
        uplink = Uplink(
            config=up,
            site=cfg.gateway.site,
            gateway=cfg.gateway.id,
            agent_version=__version__,
            password=password,
            clock_ms=clock_ms,
            on_command=bridge.on_command if cfg.commands.enabled else None,
            on_results=bridge.on_results,
        )
    return Components(
        cfg=cfg,
        paths=paths,
        clock_ms=clock_ms,
        config_hash=config_hash(cfg),
        tags=tags,
        engine=engine,
        buses={name: tuple(devs) for name, devs in buses.items()},
        policies=policies,
        shaper=shaper,
        bridge=bridge,
        uplink=uplink,
        commands_enabled=cfg.commands.enabled,
        max_resend=cfg.commands.max_resend,
        outputs=outputs,
        incidents=incident_recorder(cfg, tags, engine),
    )


def open_store(c: Components) -> Store:
    """Open (or create, or recover) the buffer the config names. I/O."""
    buf = c.cfg.buffer
    return Store.open(
        path=c.paths.buffer_path,
        key_file=c.paths.buffer_key_file,
        gateway_id=c.cfg.gateway.id,
        cipher=buf.cipher,
        retention_days=buf.retention_days,
        capacity_bytes=buf.capacity_bytes,
        stream_limits=buf.stream_limits(),
        reserve_bytes=buf.reserve_bytes,
        clock_ms=c.clock_ms,
    )


def forwarder(c: Components, *, store: Store, uplink: Uplink) -> Forwarder:
    up = c.cfg.uplink
    return Forwarder(
        store=store,
        uplink=uplink,
        site=c.cfg.gateway.site,
        gateway=c.cfg.gateway.id,
        backfill_after_s=up.backfill_after_s,
        max_inflight=up.max_inflight,
        clock_ms=c.clock_ms,
        drain_rate=up.drain_rate,
    )


def command_processor(c: Components, handlers: CommandHandlers) -> CommandProcessor:
    """The verifier of signed commands, with its replay file (read here: I/O)."""
    replay = ReplayStore(
        c.paths.data_dir / "commands_seen.json",
        max_ids=c.cfg.commands.seen_ids_max,
        clock_ms=c.clock_ms,
    )
    limits = c.cfg.commands
    budget = TokenBucket(
        rate=limits.verify_per_s, burst=max(1.0, limits.verify_per_s), now=time.monotonic()
    )
    return CommandProcessor(
        gateway=c.cfg.gateway.id,
        trusted_keys=load_public_keys(limits.trusted_keys),
        replay=replay,
        handlers=handlers,
        clock_ms=c.clock_ms,
        verify_allowed=lambda: budget.take(time.monotonic()),
    )
