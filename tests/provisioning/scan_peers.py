"""Peers for the scan and probe tests: pymodbus units with address holes, a unit that answers
only FC 43/14 (every read refused with exception 1), and RTU lines at a given baud rate.

A Linux pty carries bytes whatever the baud rate, so :func:`line_at` puts a relay in front of a
real pymodbus RTU server: it forwards the scanner's bytes only while the scanner's end of the
pty is set to the device's baud rate (read with ``tcgetattr`` on the pty master), as a real
line at another speed would give garbage that no device answers. Parity cannot be emulated this
way: the Linux pty driver clears PARENB, so 8N1 and 8E1 look the same on a pty. The relay also
drops requests for unit ids that no device has (the simulator would answer them with exception
4; a real line stays silent). A client writes a request in one write, so one read is one frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from pymodbus.constants import ExcCodes
from pymodbus.pdu.device import ModbusDeviceIdentification
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

IDENTITY = ModbusDeviceIdentification(
    info_name={"VendorName": "Hanwei", "ProductCode": "BS01-II", "MajorMinorRevision": "2.1"}
)

# holding 0-9 and 20-29 and 100-149 readable; 10-19 and 30-99 are holes
HOLDING_BLOCKS = ((0, 10), (20, 10), (100, 50))
INPUT_BLOCKS = ((0, 5),)


def holes_device(unit: int) -> SimDevice:
    """Readable: holding 0-9, 20-29, 100-149; input 0-4; coils and discrete inputs 0-15."""
    holding = [SimData(address=a, values=[a + i for i in range(n)], datatype=DataType.REGISTERS)
               for a, n in HOLDING_BLOCKS]  # fmt: skip
    inputs = [SimData(address=a, values=[7] * n, datatype=DataType.REGISTERS)
              for a, n in INPUT_BLOCKS]  # fmt: skip
    coils = [SimData(address=0, values=[True, False] * 8, datatype=DataType.BITS)]
    discrete = [SimData(address=0, values=[False] * 16, datatype=DataType.BITS)]
    return SimDevice(id=unit, simdata=(coils, discrete, holding, inputs))


async def _refuse_reads(*_args: object) -> ExcCodes:
    return ExcCodes.ILLEGAL_FUNCTION


def fc43_only_device(unit: int) -> SimDevice:
    """Registers exist but every read is refused with exception 1 (illegal function)."""
    data = [SimData(address=0, values=[0] * 2000, datatype=DataType.REGISTERS)]
    return SimDevice(id=unit, simdata=data, action=_refuse_reads)


def plain_device(unit: int, values: list[int] | None = None) -> SimDevice:
    data = [SimData(address=0, values=values or [unit] * 10, datatype=DataType.REGISTERS)]
    return SimDevice(id=unit, simdata=data)


def _speed(fd: int) -> int:
    return int(termios.tcgetattr(fd)[4])


_SPEEDS = {4800: termios.B4800, 9600: termios.B9600, 19200: termios.B19200,
           38400: termios.B38400, 115200: termios.B115200}  # fmt: skip


@dataclass
class Line:
    path: str  # what the scanner (or the agent) opens
    requests: int = 0  # frames that reached the devices' side
    functions: set[int] = field(default_factory=set)  # function codes of every frame sent


@contextlib.asynccontextmanager
async def line_at(baud: int, *devices: SimDevice) -> AsyncIterator[Line]:
    """A serial line whose devices answer only at ``baud``."""
    loop = asyncio.get_running_loop()
    near_m, near_s = os.openpty()  # the scanner opens near_s by path
    far_m, far_s = os.openpty()  # the server opens far_s by path
    for fd in (near_m, far_m):
        os.set_blocking(fd, False)
    want = _SPEEDS[baud]
    dropped = [0]
    present = {d.id for d in devices}

    def forward(src: int, dst: int, gate: bool) -> None:
        try:
            data = os.read(src, 4096)
        except (BlockingIOError, OSError):
            return
        if gate and len(data) > 1:
            line.functions.add(data[1])
        if gate and _speed(near_m) != want:
            dropped[0] += len(data)  # the device cannot make sense of bytes at another speed
            return
        if gate and data[0] not in present:
            return  # nobody has this unit id: on a real line nobody answers
        if gate:
            line.requests += 1
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(dst, data)

    server = ModbusSerialServer(
        list(devices), port=os.ttyname(far_s), baudrate=baud, ignore_missing_devices=True
    )
    await server.serve_forever(background=True)
    line = Line(os.ttyname(near_s))
    loop.add_reader(near_m, forward, near_m, far_m, True)
    loop.add_reader(far_m, forward, far_m, near_m, False)
    try:
        yield line
    finally:
        loop.remove_reader(near_m)
        loop.remove_reader(far_m)
        await server.shutdown()  # type: ignore[no-untyped-call]
        for fd in (near_m, near_s, far_m, far_s):
            os.close(fd)


async def _no_such_unit(*_args: object) -> ExcCodes:
    return ExcCodes.GATEWAY_NO_RESPONSE


def gateway_catch_all() -> SimDevice:
    """Unit id 0 of the simulator stands for every unit not defined: answer as a Modbus TCP
    gateway does for a unit that is not on its bus (exception 11, target failed to respond)."""
    data = [SimData(address=0, values=[0] * 2000, datatype=DataType.REGISTERS)]
    return SimDevice(id=0, simdata=data, action=_no_such_unit)
