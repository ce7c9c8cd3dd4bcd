"""Reload (SIGHUP, ``systemctl reload``): check the new file fully, then apply it or keep the
old config running.

Invariants:
- A reload never leaves the site unmonitored: the new file goes through exactly the checks of
  ``safeedge run`` (:func:`agent.config.load_config` with the file check, then
  :func:`agent.runtime.build.build`); on any error the old config keeps running, the error is
  logged and a ``config_rejected`` event (the file's hash, every issue) is recorded.
- Applied atomically: nothing of the running agent changes before the new config has built.
  When the tag table is the same and only what :data:`IN_PLACE` names changed (``[[rules]]``;
  the telemetry shaping: ``[uplink.policy]``, ``[[uplink.tags]]``,
  ``[uplink.report_by_exception]``, the telemetry record limits; ``[[outputs]]``;
  ``gateway.codes``) and device settings (``devices.<name>``), the change is applied in place
  on the event loop: the rule engine (and, for a shaping change, the telemetry shaper: what the
  old one held is appended first, its open statistics windows close early) is swapped between
  two polls; only the buses of changed devices (with the other devices on those lines) are
  stopped, closed, rebuilt and polled again (:func:`bus_plan`); the alarm-output writers are
  replaced between two output steps when ``[[outputs]]`` or a rebuilt device changed (a
  writer whose entry and device are unchanged goes on; see
  :class:`agent.runtime.outputs.OutputSet`). Every other device keeps its connection and poll
  phase. Tags with unchanged parameters keep their alarm state (levels, acknowledgements,
  alarm ids; timers and windows start empty as after a restart), tags whose parameters
  changed end their open alarms with ``clear(reason=config_changed)`` at their next sample,
  and ``meta`` (limits, policies, codes) is republished. Any other change (tags added,
  removed or moved; the broker, buffer, operations) ends the run in order and the agent runs
  again in-process with the new config (alarm state survives that as it survives a restart:
  see :mod:`agent.runtime.alarmstate`).
- ``config_applied`` (old and new hash, what changed by section or key, how, and one line
  per tag policy or output changed: :mod:`agent.runtime.reloaddiff`) is recorded before either path
  takes effect, and the new config becomes the last good one (:mod:`agent.lastgood`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import msgspec

from agent import lastgood
from agent.alarm_outputs import OutputPolicy
from agent.config import AgentConfig, ConfigError, load_config, resolved_paths
from agent.credentials import broker_password, with_credentials
from agent.logs import kv
from agent.runtime.alarms import AlarmRecorder
from agent.runtime.build import Components, build
from agent.runtime.buses import BusSet
from agent.runtime.meta import components_meta
from agent.runtime.reloaddiff import output_changes, policy_changes
from agent.runtime.sink import RecordSink
from agent.shaping import TelemetryShaper
from agent.uplink import UplinkConfigError
from drivers import Device, DriverConfigError, OutputWriter
from rules import RuleConfigError, RuleEngine

__all__ = ["IN_PLACE", "SHAPING", "ReloadTarget", "Reloader", "bus_plan", "changes"]

log = logging.getLogger("safeedge.reload")


class ReloadTarget(Protocol):
    components: Components
    restart_with: Components | None
    degraded: list[str]
    buses: BusSet | None

    def swap_engine(self, engine: RuleEngine) -> None: ...

    def swap_shaper(self, shaper: TelemetryShaper) -> None: ...

    async def replace_outputs(self, pairs: Sequence[tuple[OutputWriter, OutputPolicy]]) -> str: ...

    def end_run(self) -> None: ...


def _file_hash(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError:
        return ""


# Sections listed by key (``uplink.tags``, ``gateway.codes``): some of their keys apply in place
_BY_KEY = ("gateway", "uplink")
# What the telemetry shaper is built from (agent/runtime/build.py): applied in place by a new
# shaper; tag classes, policies, windows, precision, report-by-exception, record limits
SHAPING = frozenset(
    {
        "uplink.policy",
        "uplink.tags",
        "uplink.report_by_exception",
        "uplink.telemetry_body",
        "uplink.telemetry_batch",
        "uplink.telemetry_max_bytes",
        "uplink.telemetry_linger_ms",
    }
)
IN_PLACE = SHAPING | {"rules", "outputs", "gateway.codes"}  # and devices.<name>


def changes(old: AgentConfig, new: AgentConfig) -> list[str]:
    """What differs: by section (``rules``, ``outputs``, ``buffer`` ...), by key for
    ``gateway`` and ``uplink`` (``uplink.tags``, ``uplink.host`` ...), by device
    (``devices.<name>``), and ``devices`` when the devices' order or set changed."""
    a, b = msgspec.to_builtins(old), msgspec.to_builtins(new)
    out = []
    for key in sorted(set(a) | set(b)):
        if key == "devices" or a.get(key) == b.get(key):
            continue
        if key not in _BY_KEY:
            out.append(key)
            continue
        sa, sb = a.get(key) or {}, b.get(key) or {}
        out += [f"{key}.{k}" for k in sorted(set(sa) | set(sb)) if sa.get(k) != sb.get(k)]
    old_dev = {d["name"]: d for d in a.get("devices", [])}
    new_dev = {d["name"]: d for d in b.get("devices", [])}
    for name in sorted(set(old_dev) | set(new_dev)):
        if old_dev.get(name) != new_dev.get(name):
            out.append(f"devices.{name}")
    if [d["name"] for d in a.get("devices", [])] != [d["name"] for d in b.get("devices", [])]:
        out.append("devices")  # order changed or devices added/removed: the tag table changes
    return out


class Reloader:
    """Serves reload requests for one run (event loop thread)."""

    def __init__(
        self,
        *,
        target: ReloadTarget,
        config_path: Path,
        sink: RecordSink,
        alarms: AlarmRecorder,
        requested: asyncio.Event,
        on_result: Callable[[bool, str], None] | None = None,
    ) -> None:
        self._target = target
        self._path = config_path
        self._sink = sink
        self._alarms = alarms
        self._requested = requested
        self._on_result = on_result

    async def serve(self) -> None:
        while True:
            await self._requested.wait()
            self._requested.clear()
            try:
                await self.reload()
            except Exception as exc:  # a bug here must not end monitoring: the old run goes on
                log.exception(kv("reload_failed", config=self._path))
                self._done(False, f"reload failed: {exc}")

    async def reload(self) -> bool:
        """One reload; True when applied (in place or by a run with the new config)."""
        loop = asyncio.get_running_loop()
        old = self._target.components
        log.info(kv("reload_requested", config=self._path))
        try:
            cfg = await loop.run_in_executor(
                None, lambda: load_config(self._path, check_files=True)
            )
            password = await loop.run_in_executor(None, broker_password, cfg, self._path)
            new = build(
                cfg,
                with_credentials(resolved_paths(cfg, self._path)),
                password=password,
                clock_ms=old.clock_ms,
            )
        except ConfigError as exc:
            return self._reject(lastgood.describe(exc))
        except (OSError, UnicodeDecodeError) as exc:
            return self._reject([f"broker password: {exc}"])
        except (RuleConfigError, DriverConfigError, UplinkConfigError) as exc:
            # check-config makes these checks too: reaching here is a bug, still rejected
            return self._reject([str(exc)])
        changed = changes(old.cfg, cfg)
        if not changed:
            log.info(kv("reload_unchanged", config_hash=old.config_hash))
            self._done(True, "unchanged")
            return True
        plan = bus_plan(old, new, changed) if self._target.buses is not None else None
        in_place = plan is not None
        detail = _rule_changes(old, new) if "rules" in changed else []
        self._sink.event(
            "config_applied",
            old_hash=old.config_hash,
            new_hash=new.config_hash,
            changed=changed,
            tags_changed=detail,
            mode="in_place" if in_place else "restart",
            changes=policy_changes(old, new) + output_changes(old.cfg, new.cfg),
        )
        log.info(
            kv(
                "config_applied",
                old_hash=old.config_hash,
                new_hash=new.config_hash,
                changed=",".join(changed),
                mode="in_place" if in_place else "restart",
            )
        )
        await loop.run_in_executor(None, lastgood.save, cfg)
        if plan is not None:
            await loop.run_in_executor(None, new.engine.warm_up)
            await loop.run_in_executor(None, new.shaper.warm_up)
            stop, start = plan
            merged = {b: d for b, d in old.buses.items() if b not in stop}
            merged.update(start)  # the running devices, except those being rebuilt
            new = dataclasses.replace(new, buses=merged)
            if stop or start:
                log.info(kv("reload_buses", stopped=",".join(stop), started=",".join(start)))
            self._swap_rules(old, new, shaping=bool(SHAPING & set(changed)))
            if (stop or start) and self._target.buses is not None:
                await self._target.buses.replace(stop=stop, start=start)
            # a writer is on its device's link: a rebuilt device rebuilds its writers too
            if (old.outputs or new.outputs) and ("outputs" in changed or stop or start):
                note = await self._target.replace_outputs(new.outputs)
                log.info(kv("reload_outputs", outputs=len(new.outputs), detail=note))
        else:
            self._target.restart_with = new
            self._target.end_run()
        self._done(True, new.config_hash)
        return True

    def _swap_rules(self, old: Components, new: Components, *, shaping: bool) -> None:
        """Between two polls (no await here): same tag table, new engine with the state of
        every tag carried over by the persisted-state rules (design/RULES.md 1.1); with
        ``shaping``, the new telemetry shaper (policies, precision, windows, exceptions)."""
        book = self._alarms.book
        for k in range(len(old.tags)):
            new.engine.restore_state(k, book.state_of(k))
        self._target.components = dataclasses.replace(
            old,
            cfg=new.cfg,
            engine=new.engine,
            config_hash=new.config_hash,
            buses=new.buses,
            policies=new.policies,
            shaper=new.shaper if shaping else old.shaper,
        )  # outputs: the writers held stay until replace_outputs says which go on
        self._target.swap_engine(new.engine)
        if shaping:
            self._target.swap_shaper(new.shaper)
        uplink = old.uplink
        if uplink is not None:
            uplink.set_meta(components_meta(new))  # same tag table as ``old``

    def _reject(self, errors: list[str]) -> bool:
        running = self._target.components.config_hash
        log.error(
            kv(
                "config_rejected",
                config=self._path,
                running_hash=running,
                errors=len(errors),
                first=errors[0] if errors else "",
            )
        )
        self._sink.event(
            "config_rejected",
            hash=_file_hash(self._path),  # the v2 event schema's name for it
            config_hash=_file_hash(self._path),
            running_hash=running,
            errors=errors,
        )
        self._done(False, "; ".join(errors))
        return False

    def _done(self, ok: bool, note: str) -> None:
        keep = [r for r in self._target.degraded if not r.startswith("config rejected")]
        if not ok:
            keep.append(f"config rejected at reload: {note}"[:200])
        self._target.degraded[:] = keep
        if self._on_result is not None:
            self._on_result(ok, note)


Buses = dict[str, tuple[Device, ...]]


def bus_plan(old: Components, new: Components, changed: list[str]) -> tuple[Buses, Buses] | None:
    """Which buses to stop (old devices) and start (new devices) so that every changed
    device, and every device sharing a line with one, is rebuilt while the other buses poll on;
    None when the change cannot be applied in place (another section, or the tag table moved:
    tag indices are baked into the built devices)."""
    if not all(ch in IN_PLACE or ch.startswith("devices.") for ch in changed):
        return None
    if old.tags.names != new.tags.names or [t.device for t in old.tags] != [
        t.device for t in new.tags
    ]:
        return None
    names = {ch.removeprefix("devices.") for ch in changed if ch.startswith("devices.")}

    def touched(device: Device) -> bool:
        return any(device.name == n or device.name.startswith(n + ".") for n in names)

    old_bus = {d.name: b for b, ds in old.buses.items() for d in ds}
    new_bus = {d.name: b for b, ds in new.buses.items() for d in ds}
    stop = {old_bus[d.name] for d in old.devices if touched(d)}
    start = {new_bus[d.name] for d in new.devices if touched(d)}
    while True:  # a line's other devices go with it, on both sides, until nothing is added
        before = (len(stop), len(start))
        start |= {new_bus[d.name] for b in stop for d in old.buses[b] if d.name in new_bus}
        stop |= {old_bus[d.name] for b in start for d in new.buses[b] if d.name in old_bus}
        if (len(stop), len(start)) == before:
            break
    if start & (set(old.buses) - stop):
        return None  # a new bus would share a name with a line that keeps polling
    return {b: old.buses[b] for b in stop}, {b: new.buses[b] for b in start}


def _rule_changes(old: Components, new: Components) -> list[str]:
    """Tags whose resolved rule parameters differ (the ones whose alarms restart)."""
    new_index = new.tags.index
    return [
        name
        for k, name in enumerate(old.tags.names)
        if name not in new_index
        or old.engine.params_hash(k) != new.engine.params_hash(new_index[name])
    ]
