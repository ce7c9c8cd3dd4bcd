"""Field side of SafeEdge: Modbus TCP, RTU (serial or over TCP), ASCII and serial-line devices,
and the alarm outputs (:mod:`drivers.outputs`, the only writes to a device).

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
from drivers.errors import (
    BadReply,
    DeviceUnavailable,
    DriverConfigError,
    DriverError,
    ProtocolError,
)
from drivers.modbus import ModbusDevice, wall_clock_ms
from drivers.outputs import (
    HeartbeatConfig,
    OutputConfig,
    OutputWriter,
    WriteResult,
    build_output_writers,
    output_problems,
)
from drivers.planner import PlannedPoint, ReadRequest, plan_reads
from drivers.probe import ProbeRead, ProbeResult
from drivers.serial_line import LineProbeResult, SerialLineDevice
from drivers.types import Quality, SampleBatch

__all__ = [
    "AnyDeviceConfig",
    "BadReply",
    "CurrentLoopConfig",
    "Device",
    "DeviceUnavailable",
    "DriverConfigError",
    "DriverError",
    "HeartbeatConfig",
    "LineProbeResult",
    "ModbusDevice",
    "OutputConfig",
    "OutputWriter",
    "PlannedPoint",
    "ProbeRead",
    "ProbeResult",
    "ProtocolError",
    "Quality",
    "ReadRequest",
    "SampleBatch",
    "SerialLineDevice",
    "WriteResult",
    "build_device",
    "build_devices",
    "build_output_writers",
    "output_problems",
    "plan_reads",
    "poll_group_problems",
    "wall_clock_ms",
]
