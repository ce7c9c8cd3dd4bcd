"""The run: warm up, open, connect, report ready, serve until ``stop``; then stop in order.

Shutdown order (unchanged from the single-class pipeline): stop the polls (and the helpers),
append the telemetry the batcher still holds, let the forwarder drain within the flush
timeout, stop the uplink, settle late PUBACKs, close the store. The serving tasks live in one
``asyncio.TaskGroup``; a task that ends on its own (they all loop forever) is a failure: the
same ordered shutdown runs and then ``RuntimeError("pipeline task '…' ended")`` is raised.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from agent import __version__, lastgood
from agent.alarm_outputs import AlarmOutputs, AlarmStates, OutputPolicy
from agent.commands import CommandProcessor
from agent.config import AgentConfig
from agent.forwarder import Forwarder
from agent.kernels import kernel_summary
from agent.logs import kv
from agent.notify import notify, watchdog_interval_s
from agent.runtime.actions import CommandActions, CommandEndpoint
from agent.runtime.alarms import AlarmRecorder
from agent.runtime.alarmstate import PREFIX as STATE_PREFIX
from agent.runtime.alarmstate import AlarmBook
from agent.runtime.build import Components, command_processor, forwarder, open_store
from agent.runtime.buses import BusSet
from agent.runtime.forwarding import Forwarding, stop_uplink
from agent.runtime.health import status_line
from agent.runtime.incidents import IncidentTap, incident_limits
from agent.runtime.ingest import Ingest
from agent.runtime.meta import components_meta
from agent.runtime.ops import OpsServices
from agent.runtime.outputs import OutputSet, drive_outputs, report_output
from agent.runtime.reload import Reloader
from agent.runtime.scheduler import cancel_and_wait, poll_bus
from agent.runtime.sink import RecordSink
from agent.runtime.stats import RuntimeStats
from agent.runtime.watchdog import watchdog
from agent.shaping import TelemetryShaper
from agent.uplink import Uplink
from buffer import Store
from drivers import Device, OutputWriter
from rules import RuleEngine

if TYPE_CHECKING:
    from agent.console.server import Console

__all__ = ["STOP_BUDGET_S", "Runtime"]

STOP_BUDGET_S: Final = 3.0  # from the stop signal to a closed store (exit follows)
UPLINK_STOP_S: Final = 1.0  # of which reserved for the uplink's orderly disconnect
UPLINK_STOP_MIN_S: Final = 0.5

log = logging.getLogger("safeedge.pipeline")

Spawn = Callable[[str, Coroutine[Any, Any, None]], "asyncio.Task[None]"]


class Runtime:
    """Runs built :class:`Components` until ``stop`` is set.

    ``store``, ``forwarder`` and ``commands`` are observation points for callers (tests, the
    command thread): set while the run has them, never read by the runtime itself.
    """

    def __init__(self, components: Components, *, flush_timeout_s: float = 5.0) -> None:
        self.components = components
        self.uplink = components.uplink
        self.stats = RuntimeStats()
        self.ready = asyncio.Event()
        self.store: Store | None = None
        self.forwarder: Forwarder | None = None
        self.commands: CommandProcessor | None = None
        self.outputs: AlarmOutputs | None = None
        self.alarms: AlarmRecorder | None = None
        self.ops: OpsServices | None = None  # status snapshot, control socket, metrics
        self.buses: BusSet | None = None  # poll tasks per bus (a reload may replace some)
        # reload (agent/runtime/reload.py): served only when the run knows its config file
        self.config_path: Path | None = None
        self.reload_requested = asyncio.Event()
        self.restart_with: Components | None = None  # set: run again with these
        self.degraded: list[str] = []  # reasons shown in STATUS= and `safeedge status`
        self.start_events: list[tuple[str, dict[str, object]]] = []  # recorded after "started"
        self._ingest: Ingest | None = None
        self._actions: CommandActions | None = None
        self._ending: asyncio.Event | None = None
        self.endpoint: CommandEndpoint | None = None
        self._flush_timeout_s = flush_timeout_s
        self._stopping = False
        self._failure: tuple[str, BaseException | None] | None = None
        self._stop_deadline = float("inf")  # set when the stop begins
        self.console: Console | None = None  # [console].enabled: the local web console
        self._incidents: IncidentTap | None = None
        self._output_set: OutputSet | None = None
        self._outputs_changed = asyncio.Event()
        self._spawn: Spawn | None = None  # while serving: starts a helper a reload needs
        self._helpers: dict[str, asyncio.Task[None]] = {}

    async def run(self, stop: asyncio.Event) -> None:
        c = self.components
        loop = asyncio.get_running_loop()
        t0 = time.monotonic()
        await loop.run_in_executor(None, c.engine.warm_up)
        await loop.run_in_executor(None, c.shaper.warm_up)  # not at the first poll, on the loop
        k = kernel_summary()
        where = {"reason": k.reason} if k.reason else {"modules": ",".join(p.name for p in k.paths)}
        seconds = f"{time.monotonic() - t0:.2f}"
        log.info(kv("rules_ready", tags=len(c.tags), seconds=seconds, kernels=k.impl, **where))
        store = open_store(c)
        self.store = store
        sink = RecordSink(store=store, stats=self.stats, clock_ms=c.clock_ms, wake=c.bridge.wake)
        opened = store.open_report
        if opened.recovered_from is not None or opened.ledger == "rebuilt":
            log.error(kv("buffer_recovered", moved_to=opened.recovered_from, ledger=opened.ledger))
        sink.flush_reports()  # seq_gap / buffer_corrupt from the open, before "started"
        book = AlarmBook(gateway=c.cfg.gateway.id, tags=c.tags, engine=c.engine)
        restored = book.restore(store.states(prefix=STATE_PREFIX))
        states = AlarmStates()  # kept with no outputs too: a reload may add some
        alarms = AlarmRecorder(
            tags=c.tags,
            book=book,
            sink=sink,
            stats=self.stats,
            states=states,
            changed=self._outputs_changed.set,
        )
        alarms.close_removed(c.clock_ms())
        alarms.seed_outputs()  # outputs in alarm before a restart are in alarm again at once
        self.alarms = alarms
        log.info(kv("alarm_state_restored", tags=restored, open=len(book.open_alarms())))
        output_set = OutputSet(
            states=states, report=lambda kind, result: report_output(sink, kind, result)
        )
        self._output_set, self.outputs = output_set, output_set.outputs
        incidents = None
        if c.incidents is not None:
            incidents = IncidentTap(recorder=c.incidents, sink=sink)
            incidents.restore(book.open_alarms())  # resume or close what a stop left open
        self._incidents = incidents
        ingest = Ingest(
            engine=c.engine,
            alarms=alarms,
            shaper=c.shaper,
            sink=sink,
            stats=self.stats,
            clock_ms=c.clock_ms,
            incidents=incidents,
        )
        self._ingest = ingest
        if c.cfg.console.enabled:
            from agent.console.server import console_for  # only when enabled: aiohttp

            self.console = console_for(c, alarms, ingest, sink, self.stats, incidents)
        ops = self.ops = OpsServices(run=self, sink=sink, clock_ms=c.clock_ms)
        if self.console is not None:  # its health page shows the status snapshot
            self.console.status = ops.status
        forwarding: Forwarding | None = None
        try:
            async with AsyncExitStack() as stack:
                self.buses = BusSet(stack=stack)
                await self.buses.open(c.devices)
                stack.push_async_callback(output_set.aclose)  # before the devices close
                await output_set.open(c.outputs)
                if c.uplink is not None:
                    forwarding = self._connect(c, c.uplink, store, alarms, incidents, sink, loop)
                else:
                    log.warning(kv("uplink_disabled", note="records are kept in the buffer"))
                sink.event("started", agent=__version__, config_hash=c.config_hash)
                for kind, fields in self.start_events:
                    sink.event(kind, **fields)
                await ops.start()
                await self._serve(stop, ingest, sink, forwarding, alarms)
        finally:
            await ops.stop()
            c.bridge.detach()
            if c.uplink is not None:
                left = self._stop_deadline - time.monotonic()
                budget = min(5.0, max(UPLINK_STOP_MIN_S, left))  # 5 s: as before the budget
                await stop_uplink(c.uplink, forwarding, timeout_s=budget)
            store.close()
            log.info(kv("stopped", **self._summary()))
        if self._failure is not None:
            name, exc = self._failure
            raise RuntimeError(f"pipeline task {name!r} ended") from exc

    def _connect(
        self,
        c: Components,
        uplink: Uplink,
        store: Store,
        alarms: AlarmRecorder,
        incidents: IncidentTap | None,
        sink: RecordSink,
        loop: asyncio.AbstractEventLoop,
    ) -> Forwarding:
        fwd = forwarder(c, store=store, uplink=uplink)
        self.forwarder = fwd
        forwarding = Forwarding(
            forwarder=fwd,
            uplink=uplink,
            store=store,
            flush_timeout_s=self._flush_timeout_s,
        )
        uplink.set_meta(components_meta(c))
        on_command = None
        if c.commands_enabled:
            actions = CommandActions(
                tag_index=c.tags.index,
                engine=c.engine,
                alarms=alarms,
                store=store,
                forwarder=fwd,
                uplink=uplink,
                max_resend=c.max_resend,
                clock_ms=c.clock_ms,
                incidents=incidents,
            )
            self._actions = actions
            endpoint = CommandEndpoint(
                processor=command_processor(c, actions),
                uplink=uplink,
                limits=c.cfg.commands,
                report=lambda reason, count: sink.event(
                    "commands_dropped", reason=reason, count=count
                ),
            )
            self.commands = endpoint.processor
            self.endpoint = endpoint
            on_command = endpoint.offer
        c.bridge.attach(loop, on_command, fwd)
        forwarding.start()
        return forwarding

    @property
    def delivered(self) -> int:
        return 0 if self.forwarder is None else self.forwarder.stats.delivered

    def swap_engine(self, engine: RuleEngine) -> None:
        """A reload applied new rules in place: every holder of the engine gets the new one."""
        if self._ingest is not None:
            self._ingest.use_engine(engine)
        if self._actions is not None:
            self._actions.use_engine(engine)
        if self.alarms is not None:
            self.alarms.book.use_engine(engine)
        if self.console is not None:
            c = self.components
            self.console.use_engine(engine, config_hash=c.config_hash, devices=c.devices)
        recorder = self.components.incidents
        if recorder is not None:  # the limits an incident report shows
            recorder.use_limits(incident_limits(self.components.tags, engine))

    def swap_shaper(self, shaper: TelemetryShaper) -> None:
        """A reload changed the telemetry shaping in place (between two polls)."""
        if self._ingest is not None:
            self._ingest.use_shaper(shaper)
            if shaper.timer_s is not None:
                self._helper("linger", self._ingest.linger)

    async def replace_outputs(self, pairs: Sequence[tuple[OutputWriter, OutputPolicy]]) -> str:
        """A reload changed ``[[outputs]]`` or their devices: the writers are replaced between
        two steps (see :class:`OutputSet`); returns what changed, for the log."""
        if self._output_set is None:  # pragma: no cover - the run set it before serving
            return ""
        built, dropped = await self._output_set.replace(pairs)
        used = self._output_set.outputs  # the writers kept or built: what the run holds
        self.components = dataclasses.replace(
            self.components, outputs=tuple(zip(used.writers, used.policies, strict=True))
        )
        if pairs:
            out, lock = self._output_set, self._output_set.lock
            self._helper("outputs", lambda: drive_outputs(out.outputs, self._outputs_changed, lock))
        self._outputs_changed.set()  # a changed `when` applies now, not at the next alarm
        return f"built={','.join(built)} dropped={','.join(dropped)}"

    def _helper(self, name: str, make: Callable[[], Coroutine[Any, Any, None]]) -> None:
        if name not in self._helpers and self._spawn is not None and not self._stopping:
            self._helpers[name] = self._spawn(name, make())

    def end_run(self) -> None:
        """End the run in order (as a stop does); a reload set ``restart_with`` first."""
        if self._ending is not None:
            self._ending.set()

    async def _serve(
        self,
        stop: asyncio.Event,
        ingest: Ingest,
        sink: RecordSink,
        fwd: Forwarding | None,
        alarms: AlarmRecorder,
    ) -> None:
        c = self.components
        ending = asyncio.Event()
        self._ending = ending
        async with asyncio.TaskGroup() as tg:

            def spawn(name: str, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
                return tg.create_task(self._guard(name, coro, ending), name=name)

            def poll(devices: Sequence[Device]) -> Coroutine[Any, Any, None]:
                return poll_bus(
                    devices,
                    on_batch=ingest.on_batch,
                    stats=self.stats,
                    stopping=lambda: self._stopping,
                )

            buses = self.buses
            if buses is None:  # pragma: no cover - run() set it before serving
                raise RuntimeError("_serve before the devices were opened")
            buses.start(c.buses, spawn=spawn, poll=poll)
            helpers = [spawn("maintain", sink.maintain())]
            self._spawn, self._helpers = spawn, {}
            out = self._output_set
            if c.outputs and out is not None:
                self._helper(
                    "outputs", lambda: drive_outputs(out.outputs, self._outputs_changed, out.lock)
                )
            if self.console is not None:
                helpers.append(spawn("console", self.console.serve()))
            if self.endpoint is not None:  # the command worker: bounded work per iteration
                helpers.append(spawn("commands", self.endpoint.run()))
            if ingest.lingers:
                self._helper("linger", ingest.linger)
            interval = watchdog_interval_s()
            if interval is not None:
                slowest = max((d.poll_interval_s for d in c.devices), default=1.0)
                helpers.append(
                    spawn(
                        "watchdog",
                        watchdog(interval_s=interval, slowest_poll_s=slowest, stats=self.stats),
                    )
                )
            if self.config_path is not None:
                reloader = Reloader(
                    target=self,
                    config_path=self.config_path,
                    sink=sink,
                    alarms=alarms,
                    requested=self.reload_requested,
                )
                helpers.append(spawn("reload", reloader.serve()))
            if self.ops is not None:
                helpers.append(spawn("health", self.ops.health()))
            forward = (fwd, spawn("forward", fwd.run())) if fwd is not None else None
            stopper = tg.create_task(_set_when(stop, ending), name="stopper")
            self.ready.set()
            notify("READY=1")
            log.info(kv("ready", devices=len(c.devices), tags=len(c.tags)))
            if self.ops is not None:
                notify("STATUS=" + status_line(self.ops.publish_now()))
            if self.config_path is not None and not self.degraded:
                keep_last_good(c.cfg)
            await ending.wait()
            # One budget for the whole stop (SIGTERM is honoured within ~STOP_BUDGET_S even
            # when a flood keeps the broker from answering): the flush leaves the uplink its
            # share, whatever the flush timeout.
            self._stop_deadline = time.monotonic() + STOP_BUDGET_S
            notify("STOPPING=1")
            log.info(kv("stopping", budget_s=STOP_BUDGET_S))
            self._stopping = True
            stopper.cancel()
            c.bridge.detach()  # no command is taken once stopping began
            if self.endpoint is not None:
                self.endpoint.inbox.close()
            await cancel_and_wait([*buses.tasks, *helpers, *self._helpers.values()])
            ingest.flush()
            if forward is not None:
                forwarding, task = forward
                if self._failure is not None:
                    task.cancel()
                else:
                    await forwarding.flush(task, deadline=self._stop_deadline - UPLINK_STOP_S)

    async def _guard(
        self, name: str, coro: Coroutine[Any, Any, None], ending: asyncio.Event
    ) -> None:
        """Run a forever-loop; its ending at all (returning or raising) ends the run."""
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # re-raised by run() after the ordered stop
            self._note_failure(name, exc)
        else:
            self._note_failure(name, None)
        ending.set()

    def _note_failure(self, name: str, exc: BaseException | None) -> None:
        if self._failure is None and not self._stopping:
            self._failure = (name, exc)

    def _summary(self) -> dict[str, object]:
        out: dict[str, object] = {
            "polls": self.stats.polls,
            "samples": self.stats.samples,
            "alarms": self.stats.alarms,
            "missed": self.stats.missed_deadlines,
        }
        if self.forwarder is not None:
            out["delivered"] = self.forwarder.stats.delivered
        if self.endpoint is not None:  # every command received: answered or dropped (counted)
            inbox = self.endpoint.inbox
            out.update(
                cmd_received=inbox.received,
                cmd_answered=inbox.answered,
                cmd_published=inbox.published,
                **{f"cmd_dropped_{k}": v for k, v in inbox.dropped.items()},
            )
        return out


def keep_last_good(cfg: AgentConfig) -> None:
    try:
        lastgood.save(cfg)
    except OSError as exc:  # the agent runs on; only the fallback at a bad start is lost
        log.warning(kv("last_good_not_saved", error=exc))


async def _set_when(stop: asyncio.Event, ending: asyncio.Event) -> None:
    await stop.wait()
    ending.set()
