"""Field side of SafeEdge: Modbus TCP and Modbus RTU devices.

``build_device(cfg, tag_index=..., serial_ports=...)`` turns a device config into a
:class:`ModbusDevice` (no I/O); ``async with device: batch = await device.poll()``.
Failures are named by remedy in :mod:`drivers.errors`.
"""

from drivers.errors import DeviceUnavailable, DriverConfigError, DriverError, ProtocolError
from drivers.modbus import ModbusDevice, ProbeRead, ProbeResult, build_device, wall_clock_ms
from drivers.planner import PlannedPoint, ReadRequest, plan_reads
from drivers.types import Quality, SampleBatch

__all__ = [
    "DeviceUnavailable",
    "DriverConfigError",
    "DriverError",
    "ModbusDevice",
    "PlannedPoint",
    "ProbeRead",
    "ProbeResult",
    "ProtocolError",
    "Quality",
    "ReadRequest",
    "SampleBatch",
    "build_device",
    "plan_reads",
    "wall_clock_ms",
]
