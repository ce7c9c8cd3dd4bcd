"""A simulated hazardous-chemicals tank farm behind a real Modbus TCP server.

The site: four combustible gas detectors (GT-101..GT-104, %LEL), two tank temperatures
(TT-101/102, °C), two tank pressures (PT-101/102, kPa gauge) and two tank levels (LT-101/102, %).
Every ``cycle_s`` seconds of scenario time, a leak near GT-102 starts at ``leak_start_s``:

==========================  ==============================================================
scenario time (defaults)    GT-102
==========================  ==============================================================
0 – 10 s                    baseline (2–4 %LEL, fixed per seed)
10 → 20 s                   ramps to 25 %LEL (level-1 alarm, GB/T 50493-2019)
20 → 28 s                   ramps to 50 %LEL (level-2 alarm)
28 → 32 s                   ramps to 60 %LEL, holds until 42 s
42 → 60 s                   recovers to its baseline
60 – 120 s                  baseline; the cycle repeats
==========================  ==============================================================

All readings carry small, smooth noise that is a pure function of (time, seed):
:func:`scenario_values` is deterministic. :class:`TankFarmSimulator` serves the values through
pymodbus' ``ModbusTcpServer`` (SimDevice datastore, read-only), refreshing its registers 20 times
a second; :data:`REGISTER_MAP` says where each value lives. :func:`tank_farm_config` writes the
agent config that reads this site.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import math
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

import numpy as np
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.codec import encode_registers
from drivers.config import DataType as TagType
from drivers.config import WordOrder

__all__ = [
    "CYCLE_S",
    "GOVERNANCE",
    "LEAK_START_S",
    "LEAK_TAG",
    "REGISTER_MAP",
    "RegisterSpec",
    "TankFarmSimulator",
    "register_map_summary",
    "scenario_values",
    "tank_farm_config",
]

LEAK_TAG = "GT-102"
LEAK_START_S = 10.0
CYCLE_S = 120.0
UPDATE_PERIOD_S = 0.05  # registers refreshed 20×/s
# leak profile: (seconds after leak start, %LEL); None is the detector's baseline
_LEAK_KNOTS: tuple[tuple[float, float | None], ...] = (
    (0.0, None),
    (10.0, 25.0),
    (18.0, 50.0),
    (22.0, 60.0),
    (32.0, 60.0),
    (50.0, None),
)
LEAK_DURATION_S = _LEAK_KNOTS[-1][0]


@dataclass(frozen=True, slots=True)
class RegisterSpec:
    """Where a simulated value lives: ``register value = value / scale`` (``type``-encoded)."""

    table: Literal["holding", "input"]
    address: int
    type: TagType
    scale: float
    unit: str
    description: str
    byte_order: WordOrder | None = None  # None: the device's (ABCD)


REGISTER_MAP: dict[str, RegisterSpec] = {
    "GT-101": RegisterSpec("input", 0, "uint16", 0.1, "%LEL", "combustible gas, tank T-101 bund"),
    "GT-102": RegisterSpec("input", 1, "uint16", 0.1, "%LEL", "combustible gas, pump P-101"),
    "GT-103": RegisterSpec("input", 2, "uint16", 0.1, "%LEL", "combustible gas, tank T-102 bund"),
    "GT-104": RegisterSpec("input", 3, "uint16", 0.1, "%LEL", "combustible gas, loading bay"),
    "TT-101": RegisterSpec("input", 10, "int16", 0.1, "°C", "tank T-101 temperature"),
    "TT-102": RegisterSpec("input", 11, "int16", 0.1, "°C", "tank T-102 temperature"),
    "PT-101": RegisterSpec("holding", 100, "float32", 1.0, "kPa", "tank T-101 pressure (gauge)"),
    "PT-102": RegisterSpec("holding", 102, "float32", 1.0, "kPa", "tank T-102 pressure (gauge)"),
    "LT-101": RegisterSpec("holding", 104, "float32", 1.0, "%", "tank T-101 level", "CDAB"),
    "LT-102": RegisterSpec("holding", 106, "float32", 1.0, "%", "tank T-102 level", "CDAB"),
}
_TABLE_START = {"input": 0, "holding": 100}
_TABLE_SIZE = 16  # registers per table, contiguous so block reads across small gaps succeed
_INT_LIMITS = {"uint16": (0, 0xFFFF), "int16": (-0x8000, 0x7FFF)}


def register_map_summary() -> str:
    """One line per table: ``input 0-15: GT-101@0 uint16×0.1 %LEL, ...``."""
    lines = []
    for table, start in _TABLE_START.items():
        items = ", ".join(
            f"{name}@{s.address} {s.type}×{s.scale:g} {s.unit}"
            + (f" {s.byte_order}" if s.byte_order else "")
            for name, s in REGISTER_MAP.items()
            if s.table == table
        )
        lines.append(f"{table} {start}-{start + _TABLE_SIZE - 1}: {items}")
    return "; ".join(lines)


# -- the scenario (pure) ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Site:
    base: dict[str, float]
    noise: dict[str, tuple[float, np.ndarray, np.ndarray]]  # amplitude, frequencies, phases
    drift_phase: dict[str, float]


_NOISE_AMPLITUDE = {"GT": 0.3, "TT": 0.1, "PT": 0.5, "LT": 0.1}
_BASE_RANGE = {"GT": (2.0, 4.0), "TT": (22.0, 28.0), "PT": (170.0, 190.0), "LT": (40.0, 70.0)}


@functools.lru_cache(maxsize=32)
def _site(seed: int) -> _Site:
    rng = np.random.default_rng(seed)
    base, noise, drift = {}, {}, {}
    for name in REGISTER_MAP:
        kind = name[:2]
        lo, hi = _BASE_RANGE[kind]
        base[name] = float(rng.uniform(lo, hi))
        noise[name] = (
            _NOISE_AMPLITUDE[kind],
            rng.uniform(0.05, 0.7, 3),
            rng.uniform(0.0, 2 * math.pi, 3),
        )
        drift[name] = float(rng.uniform(0.0, 2 * math.pi))
    return _Site(base, noise, drift)


def _leak(u: float, baseline: float) -> float:
    """GT-102 at ``u`` seconds after the leak started (piecewise linear through the knots)."""
    if u <= 0.0 or u >= LEAK_DURATION_S:
        return baseline
    for (u0, v0), (u1, v1) in itertools.pairwise(_LEAK_KNOTS):
        if u0 <= u <= u1:
            a = baseline if v0 is None else v0
            b = baseline if v1 is None else v1
            return a + (b - a) * (u - u0) / (u1 - u0)
    return baseline  # not reached: the knots cover (0, LEAK_DURATION_S)


def scenario_values(
    t_s: float,
    seed: int,
    *,
    leak_start_s: float = LEAK_START_S,
    cycle_s: float = CYCLE_S,
) -> dict[str, float]:
    """Engineering values of every tag at scenario time ``t_s`` (pure, deterministic).

    Raises ValueError when the leak does not fit in the cycle
    (``leak_start_s + 50 > cycle_s``) or ``leak_start_s < 0``.
    """
    if leak_start_s < 0 or leak_start_s + LEAK_DURATION_S > cycle_s:
        raise ValueError(
            f"leak_start_s={leak_start_s:g} does not fit: the leak lasts {LEAK_DURATION_S:g} s "
            f"and must end within cycle_s={cycle_s:g}"
        )
    site = _site(seed)
    out: dict[str, float] = {}
    for name in REGISTER_MAP:
        amp, freqs, phases = site.noise[name]
        noise = amp * float(np.mean(np.sin(2 * math.pi * freqs * t_s + phases)))
        base = site.base[name]
        kind = name[:2]
        drift = site.drift_phase[name]
        if name == LEAK_TAG:
            value = _leak(t_s % cycle_s - leak_start_s, base) + noise
        elif kind == "GT":
            value = base + noise
        elif kind == "TT":
            value = base + 1.5 * math.sin(2 * math.pi * t_s / 600.0 + drift) + noise
        elif kind == "PT":
            value = base + 5.0 * math.sin(2 * math.pi * t_s / 300.0 + drift) + noise
        else:
            value = base + 10.0 * math.sin(2 * math.pi * t_s / (5 * cycle_s) + drift) + noise
        out[name] = max(0.0, value) if kind == "GT" else value
    return out


def _registers(values: dict[str, float]) -> dict[str, list[int]]:
    """Register images of both tables (aligned to each table's first address)."""
    images = {table: [0] * _TABLE_SIZE for table in _TABLE_START}
    for name, spec in REGISTER_MAP.items():
        raw = values[name] / spec.scale
        if spec.type in _INT_LIMITS:
            lo, hi = _INT_LIMITS[spec.type]
            raw = min(max(round(raw), lo), hi)
        regs = encode_registers(raw, spec.type, spec.byte_order or "ABCD")
        offset = spec.address - _TABLE_START[spec.table]
        images[spec.table][offset : offset + len(regs)] = regs
    return images


# -- the server -------------------------------------------------------------------------------


class TankFarmSimulator:
    """The tank farm as a Modbus TCP server (one unit id, read-only registers).

    Keyword-only arguments:
        host, port: where to listen (``port=0`` picks a free port; see :attr:`port`).
        unit_id: the Modbus unit id answered (others get exception 4 from pymodbus).
        seed: selects baselines and noise; the same seed gives the same values.
        time_scale: scenario seconds per wall second (e.g. 10 for a quick test).
        leak_start_s, cycle_s: the leak's start within each cycle and the cycle length.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 5020,
        unit_id: int = 1,
        seed: int = 1,
        time_scale: float = 1.0,
        leak_start_s: float = LEAK_START_S,
        cycle_s: float = CYCLE_S,
    ) -> None:
        if time_scale <= 0:
            raise ValueError(f"time_scale must be > 0, not {time_scale}")
        scenario_values(0.0, seed, leak_start_s=leak_start_s, cycle_s=cycle_s)  # validates
        self.host = host
        self.port = port
        self.unit_id = unit_id
        self.seed = seed
        self.time_scale = time_scale
        self.leak_start_s = leak_start_s
        self.cycle_s = cycle_s
        self._server: ModbusTcpServer | None = None
        self._updater: asyncio.Task[None] | None = None
        self._t0 = 0.0
        self._images = _registers(self.values_at(0.0))

    def values_at(self, t_s: float) -> dict[str, float]:
        return scenario_values(t_s, self.seed, leak_start_s=self.leak_start_s, cycle_s=self.cycle_s)

    def scenario_time(self) -> float:
        """Scenario seconds since :meth:`start` (0 before)."""
        if self._server is None:
            return 0.0
        return (asyncio.get_running_loop().time() - self._t0) * self.time_scale

    async def start(self) -> None:
        """Listen and start refreshing the registers. Raises OSError if the port is taken."""
        if self._server is not None:
            raise RuntimeError("simulator already started")
        blocks = {
            table: SimData(
                address=start,
                count=_TABLE_SIZE,
                values=0,
                datatype=DataType.REGISTERS,
                readonly=True,
            )
            for table, start in _TABLE_START.items()
        }
        no_bits = SimData(address=0, values=[False] * 16, datatype=DataType.BITS, readonly=True)
        device = SimDevice(
            id=self.unit_id,
            simdata=([no_bits], [no_bits], [blocks["holding"]], [blocks["input"]]),
            action=self._on_access,
        )
        server = ModbusTcpServer(device, address=(self.host, self.port))
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {self.host}:{self.port}") from exc
        self._server = server
        sockets = getattr(server.transport, "sockets", None) or []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        self._t0 = asyncio.get_running_loop().time()
        self._refresh()
        self._updater = asyncio.create_task(self._update_forever(), name="tank farm registers")

    async def stop(self) -> None:
        """Stop serving (clients see their connection closed). Idempotent."""
        if self._updater is not None:
            self._updater.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._updater
            self._updater = None
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None

    async def __aenter__(self) -> TankFarmSimulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _refresh(self) -> None:
        self._images = _registers(self.values_at(self.scenario_time()))

    async def _update_forever(self) -> None:
        while True:
            await asyncio.sleep(UPDATE_PERIOD_S)
            self._refresh()

    async def _on_access(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> None:
        """pymodbus calls this before answering: copy the current image into its block."""
        table = {3: "holding", 4: "input"}.get(function_code)
        if table is not None and set_values is None:
            image = self._images[table]
            registers[: len(image)] = image


# -- the agent config for this site -----------------------------------------------------------

DEVICE_NAME = "tank-farm-plc"
_TAG_RANGES = {"GT": (0.0, 100.0), "TT": (-40.0, 150.0), "PT": (0.0, 1000.0), "LT": (0.0, 100.0)}
# (match, keys): GB/T 50493-2019 — level 1 at ≤ 25 %LEL, level 2 at ≤ 50 %LEL
_RULES: tuple[tuple[str, str, dict[str, float]], ...] = (
    (
        "GT-*",
        "combustible gas, GB/T 50493-2019",
        {"high": 25.0, "high_high": 50.0, "deadband": 2.0},
    ),
    ("TT-*", "tank temperature", {"high": 45.0, "high_high": 60.0, "deadband": 1.0}),
    ("PT-*", "tank pressure (gauge)", {"high": 250.0, "high_high": 300.0, "deadband": 5.0}),
    (
        "LT-*",
        "tank level (overfill / run dry)",
        {"high": 90.0, "high_high": 95.0, "low": 10.0, "low_low": 5.0, "deadband": 1.0},
    ),
)


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _toml_float(x: float) -> str:
    return repr(float(x))


def tank_farm_config(
    *,
    modbus_host: str,
    modbus_port: int,
    mqtt_host: str,
    mqtt_port: int,
    data_dir: str,
    site: str = "DEMO",
    gateway: str = "GW1",
    uplink_enabled: bool = True,
    rtu_path: str | None = None,
    gas_path: str | None = None,
    governance: bool = True,
) -> str:
    """The agent's TOML config for the simulated tank farm (see agent/config.py).

    ``governance`` (default) adds the shipped data policy (:data:`GOVERNANCE`): gas raw at
    one decimal, sent when it moves by more than 0.5 %LEL or every 60 s; tank temperatures,
    pressures and levels as 1-minute statistics; zlib compression. Without it every reading
    of every tag is sent (what tests that count readings per tag want).

    One ``modbus_tcp`` device (poll 1 s, timeout 0.5 s) with a tag per :data:`REGISTER_MAP`
    entry, and ``[[rules]]`` for gas (high 25 / high_high 50 %LEL, deadband 2), temperature,
    pressure and level. ``rtu_path`` adds the RTU analyser (``modbus_rtu``, unit 2: AT-201
    H2S, AT-202 O2) and ``gas_path`` the ASCII gas controller (``serial_line``: GT-301, GT-302)
    of :mod:`provisioning.simulator_serial`, each on its own ``[[serial_ports]]`` entry.
    """
    lines = [
        "# SafeEdge agent config for the simulated tank farm (safeedge simulate).",
        "",
        "[gateway]",
        f"site = {_toml_str(site)}",
        f"id = {_toml_str(gateway)}",
        f"data_dir = {_toml_str(data_dir)}",
        "",
        "[uplink]",
        f"enabled = {'true' if uplink_enabled else 'false'}",
        f"host = {_toml_str(mqtt_host)}",
        f"port = {int(mqtt_port)}",
        *(GOVERNANCE if governance else ()),
        "",
        "[buffer]",
        'path = "buffer.db"',
        'key_file = "buffer.key"',
        "",
        *_serial_ports(rtu_path, gas_path),
        "[[devices]]",
        'driver = "modbus_tcp"',
        f"name = {_toml_str(DEVICE_NAME)}",
        f"host = {_toml_str(modbus_host)}",
        f"port = {int(modbus_port)}",
        "unit_id = 1",
        "poll_interval_s = 1.0",
        "timeout_s = 0.5",
        'byte_order = "ABCD"',
    ]
    for name, spec in REGISTER_MAP.items():
        lo, hi = _TAG_RANGES[name[:2]]
        lines += [
            "",
            "[[devices.tags]]",
            f"name = {_toml_str(name)}",
            f"table = {_toml_str(spec.table)}",
            f"address = {spec.address}",
            f"type = {_toml_str(spec.type)}",
            f"scale = {_toml_float(spec.scale)}",
            f"unit = {_toml_str(spec.unit)}",
            f"description = {_toml_str(spec.description)}",
            f"range = [{_toml_float(lo)}, {_toml_float(hi)}]",
        ]
        if spec.byte_order is not None:
            lines.append(f"byte_order = {_toml_str(spec.byte_order)}")
    lines += _serial_devices(rtu_path, gas_path)
    for match, comment, keys in _RULES:
        lines += ["", f"# {comment}", "[[rules]]", f"match = {_toml_str(match)}"]
        lines += [f"{k} = {_toml_float(v)}" for k, v in keys.items()]
    return "\n".join(lines) + "\n"


GOVERNANCE: tuple[str, ...] = (
    'compression = "zlib"           # the platform inflates by the first byte (docs/uplink.md)',
    "",
    "# Gas is sent when it moves by more than 0.5 %LEL, and at least every 60 s.",
    "[uplink.report_by_exception]",
    "deadband = 0.5",
    "integrity_s = 60.0",
    "",
    "# Data policy (docs/uplink.md): alarms of every tag are always sent.",
    "[[uplink.tags]]",
    'match = "GT-*"',
    'class = "public"',
    "precision = 1",
    "",
    "[[uplink.tags]]                 # tank temperatures, pressures, levels: 1-minute statistics",
    'match = "[TPL]T-*"',
    'policy = "stats"',
    "window_s = 60.0",
    "precision = 1",
)
"""The shipped data policy of the demo site (bytes per hour: benchmarks/bench_uplink.py)."""


def _serial_ports(rtu_path: str | None, gas_path: str | None) -> list[str]:
    out: list[str] = []
    for name, path in (("rtu-line", rtu_path), ("gas-line", gas_path)):
        if path is not None:
            out += ["[[serial_ports]]", f"name = {_toml_str(name)}", f"path = {_toml_str(path)}",
                    "baudrate = 115200", ""]  # fmt: skip
    return out


def _serial_devices(rtu_path: str | None, gas_path: str | None) -> list[str]:
    out: list[str] = []
    if rtu_path is not None:
        out += ["", "[[devices]]", 'driver = "modbus_rtu"', 'name = "analyser-rtu"',
                'serial_port = "rtu-line"', "unit_id = 2", "poll_interval_s = 1.0",
                "timeout_s = 0.5"]  # fmt: skip
        for name, address, scale, unit, lo, hi, what in (
            ("AT-201", 0, 0.1, "ppm", 0.0, 100.0, "H2S, pump P-101"),
            ("AT-202", 1, 0.01, "%vol", 0.0, 25.0, "O2, tank T-101 pit"),
        ):
            out += ["", "[[devices.tags]]", f"name = {_toml_str(name)}", 'table = "input"',
                    f"address = {address}", f"scale = {_toml_float(scale)}",
                    f"unit = {_toml_str(unit)}", f"description = {_toml_str(what)}",
                    f"range = [{_toml_float(lo)}, {_toml_float(hi)}]"]  # fmt: skip
    if gas_path is not None:
        out += ["", "[[devices]]", 'driver = "serial_line"', 'name = "gas-controller"',
                'serial_port = "gas-line"', "poll_interval_s = 1.0", "timeout_s = 0.5",
                'framing = "start_end"', 'start = "$"', 'end = "\\r\\n"', 'checksum = "xor"',
                "key_field = 1"]  # fmt: skip
        for name, channel in (("GT-301", 1), ("GT-302", 2)):
            out += ["", "[[devices.tags]]", f"name = {_toml_str(name)}", "field = 2",
                    f'key = "{channel}"', 'unit = "%LEL"',
                    f'description = "combustible gas, controller channel {channel}"',
                    "range = [0.0, 100.0]"]  # fmt: skip
    return out
