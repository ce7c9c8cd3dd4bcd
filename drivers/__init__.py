"""Field side of SafeEdge: Modbus TCP, Modbus RTU and serial-line (ASCII) devices.

``build_device(cfg, tag_index=..., serial_ports=...)`` turns a device config into a device
(no I/O); ``async with device: batch = await device.poll()``. Failures are named by remedy in
:mod:`drivers.errors`.
"""

from drivers.config import CurrentLoopConfig
from drivers.devices import (
    AnyDeviceConfig,
    Device,
    build_device,
    build_devices,
    poll_group_problems,
)
from drivers.errors import DeviceUnavailable, DriverConfigError, DriverError, ProtocolError
from drivers.modbus import ModbusDevice, ProbeRead, ProbeResult, wall_clock_ms
from drivers.planner import PlannedPoint, ReadRequest, plan_reads
from drivers.serial_line import LineProbeResult, SerialLineDevice
from drivers.types import Quality, SampleBatch

__all__ = [
    "AnyDeviceConfig",
    "CurrentLoopConfig",
    "Device",
    "DeviceUnavailable",
    "DriverConfigError",
    "DriverError",
    "LineProbeResult",
    "ModbusDevice",
    "PlannedPoint",
    "ProbeRead",
    "ProbeResult",
    "ProtocolError",
    "Quality",
    "ReadRequest",
    "SampleBatch",
    "SerialLineDevice",
    "build_device",
    "build_devices",
    "plan_reads",
    "poll_group_problems",
    "wall_clock_ms",
]
