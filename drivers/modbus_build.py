"""Building Modbus devices from their config (no I/O): limits, the shared link, the device."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from drivers.config import (
    ExcludeConfig,
    ModbusRtuDeviceConfig,
    ModbusTcpDeviceConfig,
    SerialPortConfig,
)
from drivers.errors import DriverConfigError
from drivers.mblink import Link, SerialSettings, serial_link, tcp_link
from drivers.modbus import ModbusDevice, PlanLimits, wall_clock_ms
from drivers.planner import AddressRange, plan_reads

__all__ = ["build_modbus_device", "device_link"]


def _excluded(rules: Sequence[ExcludeConfig]) -> tuple[AddressRange, ...]:
    return tuple((r.table, r.address, r.address + r.count) for r in rules)


def device_link(
    cfg: ModbusTcpDeviceConfig | ModbusRtuDeviceConfig, serial_ports: Mapping[str, SerialPortConfig]
) -> Link:
    """The (shared) link of ``cfg`` (no I/O; raises DriverConfigError)."""
    if isinstance(cfg, ModbusTcpDeviceConfig):
        return tcp_link(cfg.host, cfg.port, "tcp" if cfg.framing == "mbap" else "rtu_tcp")
    port = serial_ports.get(cfg.serial_port)
    if port is None:
        raise DriverConfigError(
            f"device {cfg.name!r}: serial_port {cfg.serial_port!r} is not defined in "
            f"[[serial_ports]] (known: {sorted(serial_ports)})"
        )
    settings = SerialSettings(port.path, port.baudrate, port.bytesize, port.parity, port.stopbits)
    return serial_link(settings, port.modbus_framing, owner=port)


def build_modbus_device(
    cfg: ModbusTcpDeviceConfig | ModbusRtuDeviceConfig,
    *,
    tag_index: Mapping[str, int],
    serial_ports: Mapping[str, SerialPortConfig],
    clock_ms: Callable[[], int] = wall_clock_ms,
    monotonic: Callable[[], float] = time.monotonic,
) -> ModbusDevice:
    """Build (no I/O) the device for ``cfg``.

    ``tag_index`` maps every tag name to its index in the agent's tag table; ``serial_ports``
    maps port names to their config (RTU only). Raises :class:`DriverConfigError` (permanent)
    for a tag missing from ``tag_index``, an unknown serial port, or tags that cannot be planned.
    """
    missing = [t.name for t in cfg.tags if t.name not in tag_index]
    if missing:
        raise DriverConfigError(f"device {cfg.name!r}: tags not in the tag table: {missing}")
    limits = PlanLimits(cfg.max_registers, cfg.max_bits, cfg.max_gap, _excluded(cfg.exclude))
    try:
        plan_reads(
            cfg.tags,
            max_registers=limits.max_registers,
            max_bits=limits.max_bits,
            max_gap=limits.max_gap,
        )
    except DriverConfigError as exc:
        raise DriverConfigError(f"device {cfg.name!r}: {exc}") from exc
    return ModbusDevice(
        name=cfg.name,
        unit_id=cfg.unit_id,
        poll_interval_s=cfg.poll_interval_s,
        timeout_s=cfg.timeout_s,
        byte_order=cfg.byte_order,
        tags=cfg.tags,
        tag_ids=[tag_index[t.name] for t in cfg.tags],
        limits=limits,
        link=device_link(cfg, serial_ports),
        clock_ms=clock_ms,
        monotonic=monotonic,
        probe_interval_s=cfg.probe_interval_s,
        backoff_max_s=cfg.backoff_max_s,
        refusal_retry_s=cfg.refusal_retry_s,
    )
