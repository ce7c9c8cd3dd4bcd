"""The tank farm's scenario: where each value lives and what it is at any time (pure).

See :mod:`provisioning.simulator` for the site and the leak profile.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from drivers.codec import encode_registers
from drivers.config import DataType as TagType
from drivers.config import WordOrder

__all__ = [
    "CYCLE_S",
    "LEAK_DURATION_S",
    "LEAK_START_S",
    "LEAK_TAG",
    "REGISTER_MAP",
    "TABLE_SIZE",
    "TABLE_START",
    "UPDATE_PERIOD_S",
    "RegisterSpec",
    "register_images",
    "register_map_summary",
    "scenario_values",
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
TABLE_START = {"input": 0, "holding": 100}
TABLE_SIZE = 16  # registers per table, contiguous so block reads across small gaps succeed
_INT_LIMITS = {"uint16": (0, 0xFFFF), "int16": (-0x8000, 0x7FFF)}


def register_map_summary() -> str:
    """One line per table: ``input 0-15: GT-101@0 uint16×0.1 %LEL, ...``."""
    lines = []
    for table, start in TABLE_START.items():
        items = ", ".join(
            f"{name}@{s.address} {s.type}×{s.scale:g} {s.unit}"
            + (f" {s.byte_order}" if s.byte_order else "")
            for name, s in REGISTER_MAP.items()
            if s.table == table
        )
        lines.append(f"{table} {start}-{start + TABLE_SIZE - 1}: {items}")
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


def register_images(values: dict[str, float]) -> dict[str, list[int]]:
    """Register images of both tables (aligned to each table's first address)."""
    images = {table: [0] * TABLE_SIZE for table in TABLE_START}
    for name, spec in REGISTER_MAP.items():
        raw = values[name] / spec.scale
        if spec.type in _INT_LIMITS:
            lo, hi = _INT_LIMITS[spec.type]
            raw = min(max(round(raw), lo), hi)
        regs = encode_registers(raw, spec.type, spec.byte_order or "ABCD")
        offset = spec.address - TABLE_START[spec.table]
        images[spec.table][offset : offset + len(regs)] = regs
    return images
