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
pymodbus' ``ModbusTcpServer`` (or RTU over TCP), refreshing its registers 20 times a second;
:data:`REGISTER_MAP` says where each value lives, :data:`OUTPUT_COILS` where the beacon, siren
and shutdown-request relay are (with a heartbeat watchdog and a scripted refusal, see
:mod:`provisioning.simulator_tcp`). :func:`tank_farm_config` writes the agent config that reads
this site.

Modules: :mod:`provisioning.simulator_scenario` (the pure scenario),
:mod:`provisioning.simulator_tcp` (the server), this one (the agent config, and the names
other code imports).
"""

from __future__ import annotations

from provisioning.simulator_scenario import (
    CYCLE_S,
    LEAK_START_S,
    LEAK_TAG,
    REGISTER_MAP,
    RegisterSpec,
    register_map_summary,
    scenario_values,
)
from provisioning.simulator_tcp import (
    HEARTBEAT_ADDRESS,
    OUTPUT_COILS,
    TankFarmSimulator,
)

__all__ = [
    "CYCLE_S",
    "GOVERNANCE",
    "HEARTBEAT_ADDRESS",
    "LEAK_START_S",
    "LEAK_TAG",
    "OUTPUT_COILS",
    "REGISTER_MAP",
    "RegisterSpec",
    "TankFarmSimulator",
    "register_map_summary",
    "scenario_values",
    "tank_farm_config",
]

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
    modbus_framing: str = "mbap",
    mqtt_host: str,
    mqtt_port: int,
    data_dir: str,
    site: str = "DEMO",
    gateway: str = "GW1",
    uplink_enabled: bool = True,
    rtu_path: str | None = None,
    gas_path: str | None = None,
    outputs: bool = False,
    governance: bool = True,
) -> str:
    """The agent's TOML config for the simulated tank farm (see agent/config.py).

    ``governance`` (default) adds the shipped data policy (:data:`GOVERNANCE`): gas raw at
    one decimal, sent when it moves by more than 0.5 %LEL or every 60 s; tank temperatures,
    pressures and levels as 1-minute statistics; zlib compression. Without it every reading
    of every tag is sent (what tests that count readings per tag want).

    One ``modbus_tcp`` device (poll 1 s, timeout 0.5 s; ``modbus_framing = "rtu"`` for a
    simulator serving RTU over TCP) with a tag per :data:`REGISTER_MAP`
    entry, and ``[[rules]]`` for gas (high 25 / high_high 50 %LEL, deadband 2), temperature,
    pressure and level. ``rtu_path`` adds the RTU analyser (``modbus_rtu``, unit 2: AT-201
    H2S, AT-202 O2) and ``gas_path`` the ASCII gas controller (``serial_line``: GT-301, GT-302)
    of :mod:`provisioning.simulator_serial`, each on its own ``[[serial_ports]]`` entry.
    ``outputs`` adds ``[[outputs]]`` for the PLC's beacon (any gas alarm, fail-safe polarity,
    with the heartbeat), siren (level 2, silenced by an acknowledgement) and shutdown-request
    relay (level 2) coils.
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
        *([f"framing = {_toml_str(modbus_framing)}"] if modbus_framing != "mbap" else []),
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
    if outputs:
        lines += _outputs()
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


def _outputs() -> list[str]:
    """The PLC's beacon, siren and shutdown-request coils (provisioning/simulator_tcp.py)."""
    out = ["", "# alarm outputs on the PLC (monitoring-grade: docs/outputs.md)"]
    for name, polarity, level, unacked in (
        ("beacon", "deenergise_in_alarm", 1, False),  # fail-safe: on while all is normal
        ("siren", "energise_in_alarm", 2, True),  # an acknowledgement silences it
        ("shutdown_request", "energise_in_alarm", 2, False),
    ):
        out += ["[[outputs]]", f"name = {_toml_str(name)}", f"device = {_toml_str(DEVICE_NAME)}",
                'table = "coil"', f"address = {OUTPUT_COILS[name]}",
                f"polarity = {_toml_str(polarity)}", "reassert_s = 5.0"]  # fmt: skip
        if name == "beacon":
            out.append(f"heartbeat = {{ address = {HEARTBEAT_ADDRESS}, period_s = 0.5 }}")
        out += ["  [outputs.when]", '  match = "GT-*"', f"  min_level = {level}",
                f"  unacknowledged = {'true' if unacked else 'false'}", ""]  # fmt: skip
    return out


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
