"""``safeedge demo``: the agent's main job on a simulated site, end to end, on one machine.

Starts, on free loopback ports: the tank-farm simulator (a real Modbus TCP server) with its
serial side (:mod:`provisioning.simulator_serial`: a Modbus RTU analyser on a socat pty pair,
left out with a notice when socat is not installed, and an ASCII gas controller on a pty), a
Mosquitto broker (when installed), the agent as its own process (``safeedge run``) polling all
three drivers, and a listener playing the central platform. The agent's local web console is
on (its URL and a demo operator's login are printed): the leak shows on its alarm board. The
terminal shows alarms, events and a one-line summary every few seconds (telemetry lines only
with ``verbose``); the agent's own log goes to ``WORKDIR/agent.log`` (numba's cache to
``~/.cache/safeedge/numba`` unless ``NUMBA_CACHE_DIR`` says) and its locally raised alarms are
echoed as ``[agent]`` lines. Ctrl-C (or ``--duration``) stops the agent first (so it flushes),
then the broker and the simulators. The script and the duration start when the agent logs that
its pipeline is ready (a loaded machine may take many seconds to start it).

The script, in scenario time from the leak start (``leak_start_s``, 10 s by default): GT-102
rises to level 1, then level 2 (beacon, siren and shutdown-request relay follow); at
:data:`REFUSAL_AFTER_LEAK_S` (23 s, while GT-102 holds at 60 %LEL) the PLC refuses LT-102's
registers for :data:`REFUSAL_S` wall seconds (a program download): the agent's one
``modbus_refused`` line and its re-plans are echoed, each re-plan with a ``[demo] re-plan:``
line giving the requests per cycle against the optimum (the plan before any refusal); then
GT-102 de-escalates and clears.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from agent.codec import Alarm, Point
from agent.console.passwords import hash_password
from central.cmd_listen import format_lines
from central.listen import Listener, Message
from provisioning.localbroker import LocalBroker, find_mosquitto, free_port
from provisioning.simulator import CYCLE_S, TankFarmSimulator, tank_farm_config
from provisioning.simulator_serial import GasControllerSimulator, RtuAnalyserSimulator

__all__ = ["REFUSAL_AFTER_LEAK_S", "REFUSAL_S", "DemoOptions", "DemoResult", "run_demo"]

REFUSAL_AFTER_LEAK_S = 23.0  # scenario seconds after the leak starts: GT-102 holds at 60 %LEL
REFUSAL_S = 3.0  # wall seconds the PLC refuses its holding registers (a program download)
READY_WAIT_S = 60.0  # the scenario starts at the latest this long after the agent was started


@dataclass(frozen=True, slots=True)
class DemoOptions:
    workdir: Path
    duration_s: float | None = None  # None: until Ctrl-C
    seed: int = 1
    time_scale: float = 1.0
    leak_start_s: float = 10.0
    broker: bool = True  # False: run without a broker (the agent buffers)
    verbose: bool = False  # True: print every telemetry message too
    summary_every_s: float = 5.0
    refusal: bool = True  # the PLC refuses its holding registers for a while (see below)
    refusal_after_leak_s: float = REFUSAL_AFTER_LEAK_S  # scenario time, while GT-102 holds
    refusal_s: float = REFUSAL_S  # wall seconds


@dataclass(slots=True)
class DemoResult:
    received: dict[str, int] = field(default_factory=dict)
    alarms: list[str] = field(default_factory=list)
    gaps: int = 0
    agent_exit: int | None = None
    good_tags: set[str] = field(default_factory=set)  # tags with a good telemetry point
    console_url: str | None = None
    active: dict[str, str] = field(default_factory=dict)  # "tag alarm" → severity (platform)
    refusals: int = 0  # refused spans the agent logged (modbus_refused)
    replans: list[tuple[str, int, int]] = field(default_factory=list)  # device, before, after
    optimum: dict[str, int] = field(default_factory=dict)  # requests per cycle before any re-plan


def _agent_env() -> dict[str, str]:
    """The agent's environment: numba's cache outside the (wiped) work directory, so a second
    demo loads the kernels instead of compiling them for seconds before the first poll
    (``NUMBA_CACHE_DIR`` if set, else ``~/.cache/safeedge/numba``)."""
    env = dict(os.environ)
    env.setdefault("NUMBA_CACHE_DIR", str(Path.home() / ".cache" / "safeedge" / "numba"))
    return env


def _out(out: TextIO, line: str) -> None:
    print(line, file=out, flush=True)


def run_demo(opts: DemoOptions, out: TextIO = sys.stdout) -> DemoResult:
    """Run the demo; returns what the platform side received (for tests and the summary)."""
    if opts.workdir.exists():
        shutil.rmtree(opts.workdir)
    opts.workdir.mkdir(parents=True)
    result = DemoResult()
    mosquitto = find_mosquitto() if opts.broker else None
    broker: LocalBroker | None = None
    mqtt_port = free_port()
    if mosquitto is not None:
        broker = LocalBroker(opts.workdir / "broker", binary=mosquitto, port=mqtt_port)
        broker.start()
        _out(out, f"[demo] Mosquitto on 127.0.0.1:{mqtt_port}")
    else:
        _out(
            out,
            "[demo] no Mosquitto broker (install: apt-get install mosquitto); the agent keeps "
            "monitoring and alarming and buffers everything until a broker is reachable",
        )
    modbus_port = free_port()
    config_path = opts.workdir / "agent.toml"
    with_rtu = shutil.which("socat") is not None
    if not with_rtu:
        _out(out, "[demo] no socat (apt-get install socat): running without the RTU analyser")
    lock = threading.Lock()

    def on_message(m: Message) -> None:
        with lock:
            result.received[m.kind] = result.received.get(m.kind, 0) + 1
            if m.gap is not None:
                result.gaps += m.gap.missing  # what the gateway did not report lost
            if m.kind == "alarm":
                result.alarms.extend(format_lines(m))
                if isinstance(m.body, Alarm):
                    key = f"{m.body.tag} {m.body.alarm}"
                    if m.body.level == 0:
                        result.active.pop(key, None)
                    else:
                        result.active[key] = m.body.severity
            if m.kind == "telemetry" and isinstance(m.body, list):
                result.good_tags.update(
                    p.tag for p in m.body if isinstance(p, Point) and p.quality is None
                )
                if not opts.verbose:
                    return
            if not opts.verbose and _reassertion(m):
                return  # an alarm output re-asserted unchanged: upstream, not on this screen
            for line in format_lines(m):
                _out(out, f"[platform] {line}")

    listener: Listener | None = None
    if broker is not None:
        listener = Listener(
            host="127.0.0.1",
            port=mqtt_port,
            on_message=on_message,
            client_id="safeedge-demo-platform",
            session_expiry_s=3600,
        )
        listener.start()

    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    agent_log = opts.workdir / "agent.log"
    agent: subprocess.Popen[bytes] | None = None
    try:
        with _Simulator(opts, modbus_port, rtu=with_rtu) as sim_thread:
            _out(
                out,
                f"[demo] tank-farm simulator on 127.0.0.1:{modbus_port} (seed {opts.seed}); "
                f"the leak on GT-102 starts {opts.leak_start_s / opts.time_scale:.0f} s after "
                "the agent polls",
            )
            if sim_thread.rtu_path is not None:
                _out(out, f"[demo] RTU analyser (unit 2: AT-201, AT-202) on {sim_thread.rtu_path}")
            _out(out, f"[demo] gas controller (GT-301, GT-302) on {sim_thread.gas_path}")
            console_port = free_port()
            config_path.write_text(
                tank_farm_config(
                    modbus_host="127.0.0.1",
                    modbus_port=modbus_port,
                    mqtt_host="127.0.0.1",
                    mqtt_port=mqtt_port,
                    data_dir=str(opts.workdir / "data"),
                    rtu_path=sim_thread.rtu_path,
                    gas_path=sim_thread.gas_path,
                    outputs=True,
                )
                + _console_toml(console_port)
            )
            result.console_url = f"http://127.0.0.1:{console_port}/"
            _out(
                out,
                f"[demo] console (alarm board, live values, health): {result.console_url}  "
                f"(wall screen without login; operator: {DEMO_USER} / {DEMO_PASSWORD})",
            )
            with agent_log.open("wb") as log_file:
                agent = subprocess.Popen(
                    [sys.executable, "-m", "agent", "run", "--config", str(config_path)],
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C reaches us; we stop the agent in order
                    env=_agent_env(),
                )
            _out(out, f"[demo] agent started (pid {agent.pid}); its log: {agent_log}")
            _out(out, f"[demo] its status: safeedge status --config {config_path} [--json]")
            _follow(agent, agent_log, opts, stop, out, sim_thread, _Summary(result, lock))
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        if agent is not None:
            result.agent_exit = _stop_agent(agent)
            _out(out, f"[demo] agent stopped (exit {result.agent_exit})")
        time.sleep(0.3)  # the last PUBACKed records reach the listener
        if listener is not None:
            listener.stop()
        if broker is not None:
            broker.stop()
    _out(out, f"[demo] received: {result.received or 'nothing'}; seq gaps: {result.gaps}")
    return result


def _follow(
    agent: subprocess.Popen[bytes],
    agent_log: Path,
    opts: DemoOptions,
    stop: threading.Event,
    out: TextIO,
    sim: _Simulator,
    summary: _Summary,
) -> None:
    """Echo the agent's alarm lines, and a summary every ``summary_every_s``, until the
    duration passes, Ctrl-C, or the agent exits. The scenario (and the duration) starts when
    the agent logs that its pipeline is ready (at the latest after ``READY_WAIT_S``), so a
    slow start on a loaded machine does not eat the leak."""
    started = time.monotonic()
    next_summary = started + opts.summary_every_s
    offset = 0
    ready = False

    def begin(why: str) -> None:
        nonlocal ready, started, next_summary
        ready = True
        sim.restart_scenario()
        leak = opts.leak_start_s / opts.time_scale
        _out(out, f"[demo] {why} after {time.monotonic() - started:.0f} s: the scenario starts "
                  f"now (t=0 s); the leak on GT-102 at t={leak:.0f} s")  # fmt: skip
        started = time.monotonic()
        next_summary = started + opts.summary_every_s

    while not stop.is_set():
        if not ready and time.monotonic() - started >= READY_WAIT_S:
            begin("the agent has not said it is ready")
        if time.monotonic() >= next_summary:
            _out(out, summary.line(time.monotonic() - started))
            next_summary += opts.summary_every_s
        if opts.duration_s is not None and time.monotonic() - started >= opts.duration_s:
            return
        if agent.poll() is not None:
            _out(out, f"[demo] the agent exited with {agent.returncode}; see {agent_log}")
            return
        if sim.error is not None:
            _out(out, f"[demo] the simulator failed: {sim.error}")
            return
        with agent_log.open("rb") as f:
            f.seek(offset)
            chunk = f.read()
        complete = chunk.rfind(b"\n") + 1
        offset += complete
        for raw in chunk[:complete].splitlines():
            line = raw.decode(errors="replace")
            if not ready and " safeedge.pipeline ready " in line:
                begin("the agent polls")
            if " alarm " in line or " ERROR " in line or "uplink" in line or " modbus_" in line:
                _out(out, f"[agent]    {line.split(' ', 3)[-1]}")
            plan = _plan_line(line, summary.result)
            if plan is not None:
                _out(out, plan)
        stop.wait(0.2)


DEMO_USER = "demo"
DEMO_PASSWORD = "safeedge-demo"  # noqa: S105 - the practice site's printed operator login


def _console_toml(port: int) -> str:
    return "\n".join(
        [
            "",
            "# the local web console (docs: README, agent/console)",
            "[console]",
            "enabled = true",
            f"port = {port}",
            "anonymous_board = true",
            "[[console.users]]",
            f'name = "{DEMO_USER}"',
            'role = "operator"',
            f'password_hash = "{hash_password(DEMO_PASSWORD)}"',
            "",
        ]
    )


@dataclass(slots=True)
class _Summary:
    result: DemoResult
    lock: threading.Lock

    def line(self, elapsed_s: float) -> str:
        with self.lock:
            got = ", ".join(f"{k} {v}" for k, v in sorted(self.result.received.items()))
            active = ", ".join(f"{k} {v}" for k, v in sorted(self.result.active.items()))
            gaps = self.result.gaps
        return (
            f"[demo] t={elapsed_s:.0f}s received: {got or 'nothing'}; "
            f"active alarms: {active or 'none'}; seq gaps: {gaps}"
        )


def _stop_agent(agent: subprocess.Popen[bytes]) -> int:
    if agent.poll() is None:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(15)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()
    return int(agent.returncode)


class _Simulator:
    """Runs the simulators (TCP, RTU when ``rtu``, gas controller) on a thread of their own;
    ``rtu_path`` / ``gas_path`` are the ptys the agent opens (set once entered)."""

    def __init__(self, opts: DemoOptions, port: int, *, rtu: bool) -> None:
        self._opts = opts
        self._port = port
        self._with_rtu = rtu
        self.rtu_path: str | None = None
        self.gas_path = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="simulator", daemon=True)
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self.error: BaseException | None = None
        self._sim: TankFarmSimulator | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as exc:  # reported to the caller, never lost
            self.error = exc
            self._started.set()
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        refusal_at, refusal_s = _refusal(self._opts)
        sim = TankFarmSimulator(
            host="127.0.0.1",
            port=self._port,
            seed=self._opts.seed,
            time_scale=self._opts.time_scale,
            leak_start_s=self._opts.leak_start_s,
            refusal_at_s=refusal_at,
            refusal_s=refusal_s,
        )
        scale = self._opts.time_scale
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(sim)
            self._sim = sim
            if self._with_rtu:
                rtu = RtuAnalyserSimulator(seed=self._opts.seed, time_scale=scale)
                await stack.enter_async_context(rtu)
                self.rtu_path = rtu.agent_path
            gas = GasControllerSimulator(seed=self._opts.seed, time_scale=scale)
            await stack.enter_async_context(gas)
            self.gas_path = gas.agent_path
            self._started.set()
            await self._stop.wait()

    def restart_scenario(self) -> None:
        """Scenario time 0 now, on the simulator's thread."""
        if self._sim is not None:
            self._loop.call_soon_threadsafe(self._sim.restart_scenario)

    def __enter__(self) -> _Simulator:
        self._thread.start()
        self._started.wait(10)
        if self.error is not None:
            raise RuntimeError(f"simulator failed to start: {self.error}") from self.error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)


_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def _plan_line(line: str, result: DemoResult) -> str | None:
    """Count the agent's refusal lines; for a re-plan line, the ``[demo]`` line saying how
    many requests per cycle the device now costs against its plan before any refusal (the
    planner's optimum)."""
    if " modbus_refused " in line:
        result.refusals += 1
        return None
    if " modbus_replan " not in line:
        return None
    fields = dict(_FIELD.findall(line))
    try:
        device = fields["device"]
        before, after = int(fields["requests_before"]), int(fields["requests_after"])
    except (KeyError, ValueError):
        return None
    optimum = result.optimum.setdefault(device, before)
    result.replans.append((device, before, after))
    why = "back to the optimum" if after == optimum else f"around the refusal; optimum {optimum}"
    return f"[demo] re-plan: {device} {before} → {after} requests per cycle ({why})"


def _refusal(opts: DemoOptions) -> tuple[float | None, float]:
    """The simulator's scripted refusal (``refusal_at_s``, ``refusal_s``, scenario time)."""
    if not opts.refusal:
        return None, 0.0
    at = (opts.leak_start_s + opts.refusal_after_leak_s) % CYCLE_S
    return at, opts.refusal_s * opts.time_scale


def _reassertion(m: Message) -> bool:
    """An ``output_written`` event that changed nothing (sent every ``reassert_s``)."""
    body = m.body
    return (
        m.kind == "event"
        and isinstance(body, dict)
        and body.get("kind") == "output_written"
        and body.get("changed") is False
    )
