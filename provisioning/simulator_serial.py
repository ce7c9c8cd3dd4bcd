"""The tank farm's serial side: a Modbus RTU analyser and an ASCII gas controller on ptys.

- :class:`RtuAnalyserSimulator`: a pymodbus ``ModbusSerialServer`` (unit :data:`RTU_UNIT_ID`)
  on one end of a socat pty pair; the agent opens :attr:`~RtuAnalyserSimulator.agent_path`.
  Input registers: H2S (``AT-201``, ppm × 10) at 0 and O2 (``AT-202``, %vol × 100) at 1.
- :class:`GasControllerSimulator`: a pseudo-terminal (``os.openpty``) whose slave the agent
  opens; every ``push_period_s`` the controller writes one NMEA-style line per channel,
  ``$GAS,<channel>,<%LEL>,LEL*<xor>\\r\\n`` (channels 1 and 2: ``GT-301``, ``GT-302``).

Values are pure functions of (scenario time, seed): :func:`serial_values`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import subprocess
import tempfile
import tty
from pathlib import Path
from types import TracebackType

from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.lineproto import checksum_text

__all__ = [
    "GAS_CHANNELS",
    "RTU_UNIT_ID",
    "GasControllerSimulator",
    "RtuAnalyserSimulator",
    "gas_sentence",
    "serial_values",
]

RTU_UNIT_ID = 2
GAS_CHANNELS = {"GT-301": 1, "GT-302": 2}


def serial_values(t_s: float, seed: int) -> dict[str, float]:
    """AT-201 (H2S ppm), AT-202 (O2 %vol), GT-301/302 (%LEL) at scenario time ``t_s``."""
    phase = (seed % 97) / 97 * 2 * math.pi
    wobble = math.sin(2 * math.pi * t_s / 30.0 + phase)
    return {
        "AT-201": round(2.0 + 0.5 * wobble, 1),
        "AT-202": round(20.9 - 0.05 * wobble, 2),
        "GT-301": round(3.0 + 0.4 * wobble, 1),
        "GT-302": round(1.5 + 0.3 * math.cos(2 * math.pi * t_s / 45.0 + phase), 1),
    }


def gas_sentence(channel: int, value: float) -> bytes:
    body = f"GAS,{channel},{value:.1f},LEL".encode()
    return b"$" + body + b"*" + checksum_text("xor", body) + b"\r\n"


class RtuAnalyserSimulator:
    """A Modbus RTU analyser behind a socat pty pair (needs ``socat``). Keyword-only:
    ``seed``, ``time_scale``, ``directory`` (where the pty links go; a temporary one if None)."""

    def __init__(
        self, *, seed: int = 1, time_scale: float = 1.0, directory: Path | None = None
    ) -> None:
        self.seed, self.time_scale = seed, time_scale
        self._own_dir = directory is None
        self._dir = (
            Path(tempfile.mkdtemp(prefix="safeedge-rtu-")) if directory is None else directory
        )
        self.agent_path = str(self._dir / "rtu-agent")
        self.device_path = str(self._dir / "rtu-device")
        self._socat: subprocess.Popen[bytes] | None = None
        self._server: ModbusSerialServer | None = None
        self._t0 = 0.0

    async def start(self) -> None:
        """Create the pty pair and serve. Raises OSError when socat is missing or fails."""
        socat = shutil.which("socat")
        if socat is None:
            raise OSError("socat is needed for the RTU simulator (apt-get install socat)")
        self._socat = subprocess.Popen(  # noqa: ASYNC220 - starts a long-lived helper
            [socat, f"pty,raw,echo=0,link={self.agent_path}",
             f"pty,raw,echo=0,link={self.device_path}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(500):
            if Path(self.agent_path).exists() and Path(self.device_path).exists():
                break
            if self._socat.poll() is not None:
                raise OSError("socat exited before creating the pty pair")
            await asyncio.sleep(0.01)
        else:
            raise OSError("socat did not create the pty pair")
        regs = SimData(address=0, count=16, values=0, datatype=DataType.REGISTERS, readonly=True)
        bits = SimData(address=0, values=[False] * 16, datatype=DataType.BITS, readonly=True)
        device = SimDevice(
            id=RTU_UNIT_ID, simdata=([bits], [bits], [regs], [regs]), action=self._on_access
        )
        self._server = ModbusSerialServer(device, port=self.device_path, baudrate=115200)
        await self._server.serve_forever(background=True)
        self._t0 = asyncio.get_running_loop().time()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None
        if self._socat is not None:
            self._socat.terminate()
            self._socat.wait()
            self._socat = None
        if self._own_dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    async def __aenter__(self) -> RtuAnalyserSimulator:
        await self.start()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _on_access(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> None:
        if function_code in (3, 4) and set_values is None:
            t = (asyncio.get_running_loop().time() - self._t0) * self.time_scale
            v = serial_values(t, self.seed)
            registers[0] = round(v["AT-201"] * 10)
            registers[1] = round(v["AT-202"] * 100)


class GasControllerSimulator:
    """A gas controller pushing ASCII lines on a pseudo-terminal (see the module docstring)."""

    def __init__(self, *, seed: int = 1, time_scale: float = 1.0, push_period_s: float = 0.5):
        self.seed, self.time_scale, self.push_period_s = seed, time_scale, push_period_s
        self.agent_path = ""
        self._master = self._slave = -1
        self._task: asyncio.Task[None] | None = None
        self.lines_sent = 0

    async def start(self) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.agent_path = os.ttyname(self._slave)
        self._task = asyncio.create_task(self._push_forever(), name="gas controller")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for fd in (self._master, self._slave):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = -1

    async def __aenter__(self) -> GasControllerSimulator:
        await self.start()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _push_forever(self) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        while True:
            values = serial_values((loop.time() - t0) * self.time_scale, self.seed)
            data = b"".join(gas_sentence(ch, values[tag]) for tag, ch in GAS_CHANNELS.items())
            with contextlib.suppress(BlockingIOError):  # nobody reading: the line overflows
                os.write(self._master, data)
                self.lines_sent += len(GAS_CHANNELS)
            with contextlib.suppress(BlockingIOError, OSError):
                os.read(self._master, 4096)  # discard anything the agent writes
            await asyncio.sleep(self.push_period_s)
