"""What the agent needs from any device, and the one entry point that builds devices.

Every device kind implements :class:`Device`. ``bus`` names the physical link: devices with
the same ``bus`` must be polled by one task, one poll at a time (one owner per bus).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Protocol, Self

import msgspec

from drivers.config import (
    ModbusRtuDeviceConfig,
    ModbusTcpDeviceConfig,
    SerialLineDeviceConfig,
    SerialPortConfig,
)
from drivers.errors import DriverConfigError
from drivers.modbus import ModbusDevice, wall_clock_ms
from drivers.modbus_build import build_modbus_device
from drivers.serial_line import SerialLineDevice, build_serial_line_device
from drivers.types import SampleBatch

__all__ = ["AnyDeviceConfig", "Device", "build_device", "build_devices", "poll_group_problems"]

AnyDeviceConfig = ModbusTcpDeviceConfig | ModbusRtuDeviceConfig | SerialLineDeviceConfig


class Device(Protocol):
    """A polled device: ``async with device: batch = await device.poll()``."""

    name: str
    poll_interval_s: float
    online: bool
    lost_reason: str  # why the device is not online ("" when it is); see drivers.errors
    last_error: str  # the text of that failure
    last_outage_ms: int  # duration of the last outage, set when the device came back

    @property
    def bus(self) -> str: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def poll(self) -> SampleBatch: ...

    def health(self) -> dict[str, object]: ...


def build_device(
    cfg: AnyDeviceConfig,
    *,
    tag_index: Mapping[str, int],
    serial_ports: Mapping[str, SerialPortConfig],
    clock_ms: Callable[[], int] = wall_clock_ms,
    monotonic: Callable[[], float] = time.monotonic,
) -> ModbusDevice | SerialLineDevice:
    """Build (no I/O) the device for ``cfg`` (raises :class:`DriverConfigError`).
    ``monotonic`` drives the probe schedule of lost devices (injected in tests)."""
    if isinstance(cfg, SerialLineDeviceConfig):
        return build_serial_line_device(
            cfg, tag_index=tag_index, serial_ports=serial_ports, clock_ms=clock_ms,
            monotonic=monotonic,
        )  # fmt: skip
    return build_modbus_device(
        cfg, tag_index=tag_index, serial_ports=serial_ports, clock_ms=clock_ms, monotonic=monotonic
    )


def build_devices(
    cfg: AnyDeviceConfig,
    *,
    tag_index: Mapping[str, int],
    serial_ports: Mapping[str, SerialPortConfig],
    clock_ms: Callable[[], int] = wall_clock_ms,
    monotonic: Callable[[], float] = time.monotonic,
) -> list[ModbusDevice | SerialLineDevice]:
    """Build (no I/O) one device per poll group of ``cfg``.

    Tags without ``poll_group`` are polled as ``cfg.name`` at the device's period; each
    ``[[devices.poll_groups]]`` entry with tags becomes device ``{cfg.name}.{group}`` at its own
    period. All of them share the device's link and so its ``bus``: the pipeline polls them from
    one task, one request at a time. Raises :class:`DriverConfigError` for a tag naming an unknown
    group (``check-config`` reports it first, see :func:`poll_group_problems`).
    """
    if isinstance(cfg, SerialLineDeviceConfig) or not cfg.poll_groups:
        return [
            build_device(
                cfg,
                tag_index=tag_index,
                serial_ports=serial_ports,
                clock_ms=clock_ms,
                monotonic=monotonic,
            )
        ]
    problems = poll_group_problems(cfg)
    if problems:
        raise DriverConfigError(f"device {cfg.name!r}: {problems[0][1]}")
    parts: list[ModbusTcpDeviceConfig | ModbusRtuDeviceConfig] = []
    default = tuple(t for t in cfg.tags if t.poll_group is None)
    if default:
        parts.append(msgspec.structs.replace(cfg, tags=default, poll_groups=()))
    for group in cfg.poll_groups:
        tags = tuple(t for t in cfg.tags if t.poll_group == group.name)
        if tags:
            parts.append(
                msgspec.structs.replace(
                    cfg,
                    name=f"{cfg.name}.{group.name}",
                    poll_interval_s=group.poll_interval_s,
                    timeout_s=min(cfg.timeout_s, group.poll_interval_s),
                    tags=tags,
                    poll_groups=(),
                )
            )
    return [
        build_modbus_device(
            part,
            tag_index=tag_index,
            serial_ports=serial_ports,
            clock_ms=clock_ms,
            monotonic=monotonic,
        )
        for part in parts
    ]


def poll_group_problems(cfg: AnyDeviceConfig) -> list[tuple[str, str, str]]:
    """``(key, message, hint)`` for every poll-group mistake of a Modbus device config."""
    if isinstance(cfg, SerialLineDeviceConfig):
        return []
    problems: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for k, group in enumerate(cfg.poll_groups):
        if group.name in seen:
            problems.append(
                (
                    f"poll_groups[{k}].name",
                    f'duplicate poll group "{group.name}"',
                    "give every poll group of a device its own name",
                )
            )
        seen.add(group.name)
    for j, tag in enumerate(cfg.tags):
        if tag.poll_group is not None and tag.poll_group not in seen:
            known = ", ".join(f'"{g}"' for g in sorted(seen)) or "none"
            problems.append(
                (
                    f'tags[{j}] "{tag.name}".poll_group',
                    f'unknown poll group "{tag.poll_group}"',
                    f"define it under [[devices.poll_groups]] (known: {known})",
                )
            )
    return problems
