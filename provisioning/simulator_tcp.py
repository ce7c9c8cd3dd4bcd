"""The tank farm PLC as a Modbus TCP server (or a serial device server speaking RTU over TCP).

Registers: read-only holding 100..115 and input 0..15 (:data:`REGISTER_MAP`), refreshed 20
times a second from :func:`scenario_values`. Outputs the agent may drive (writable coils):

=====  ==========================================  ======================================
coil   output                                      PLC side
=====  ==========================================  ======================================
0      beacon (声光报警 light)                      forced to ``failsafe_coils[0]`` when the
1      siren                                       heartbeat stops changing for
2      shutdown request relay (联动, to the SIS)    ``heartbeat_timeout_s``
=====  ==========================================  ======================================

Heartbeat: holding register :data:`HEARTBEAT_ADDRESS` (writable). Once written, the PLC
expects it to change at least every ``heartbeat_timeout_s``; when it does not (the gateway
died), the output coils are forced to ``failsafe_coils`` — by the PLC, not by the gateway — and
stay forced until the heartbeat changes again (then the gateway's next write counts).

Scripted refusal: with ``refusal_at_s`` set, every cycle at that scenario time any read that
touches holding registers 106..107 (LT-102) answers exception 2 (illegal data address) for
``refusal_s`` scenario seconds, as during a PLC program download, so a demo shows the gateway
isolating the refused tag inside its block read, re-planning around it, and merging back.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Literal

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from provisioning.simulator_scenario import (
    CYCLE_S,
    LEAK_START_S,
    TABLE_SIZE,
    TABLE_START,
    UPDATE_PERIOD_S,
    register_images,
    scenario_values,
)

__all__ = ["HEARTBEAT_ADDRESS", "OUTPUT_COILS", "REFUSED_SPAN", "TankFarmSimulator"]

OUTPUT_COILS = {"beacon": 0, "siren": 1, "shutdown_request": 2}
HEARTBEAT_ADDRESS = 120
REFUSED_SPAN = (106, 108)  # holding registers refused by the scripted refusal (LT-102)
_COILS = 16


class TankFarmSimulator:
    """The tank farm PLC (one unit id). See the module docstring.

    Keyword-only arguments:
        host, port: where to listen (``port=0`` picks a free port; see :attr:`port`).
        unit_id: the Modbus unit id answered (others get exception 4 from pymodbus).
        seed: selects baselines and noise; the same seed gives the same values.
        time_scale: scenario seconds per wall second (e.g. 10 for a quick test).
        leak_start_s, cycle_s: the leak's start within each cycle and the cycle length.
        framing: ``"mbap"`` (Modbus TCP) or ``"rtu"`` (RTU frames over TCP, a serial device
            server).
        heartbeat_timeout_s: wall seconds without a heartbeat change before the PLC forces
            the output coils to ``failsafe_coils`` (0: no watchdog).
        failsafe_coils: the forced state of coils 0, 1, 2 (default all off: de-energised).
        refusal_at_s, refusal_s: the scripted refusal (None: none).
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
        framing: Literal["mbap", "rtu"] = "mbap",
        heartbeat_timeout_s: float = 3.0,
        failsafe_coils: tuple[bool, bool, bool] = (False, False, False),
        refusal_at_s: float | None = None,
        refusal_s: float = 3.0,
    ) -> None:
        if time_scale <= 0:
            raise ValueError(f"time_scale must be > 0, not {time_scale}")
        scenario_values(0.0, seed, leak_start_s=leak_start_s, cycle_s=cycle_s)  # validates
        if refusal_at_s is not None and not 0 <= refusal_at_s < cycle_s:
            raise ValueError(f"refusal_at_s={refusal_at_s:g} must lie in [0, cycle_s)")
        self.host = host
        self.port = port
        self.unit_id = unit_id
        self.seed = seed
        self.time_scale = time_scale
        self.leak_start_s = leak_start_s
        self.cycle_s = cycle_s
        self.framing = framing
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.failsafe_coils = failsafe_coils
        self.refusal_at_s = refusal_at_s
        self.refusal_s = refusal_s
        self.coils = [False] * _COILS  # the PLC's output image
        self.heartbeat: int | None = None  # last heartbeat value written
        self.failsafe = False  # True while the watchdog forces the outputs
        self.refusals = 0  # requests answered with the scripted exception 2
        self._last_beat = 0.0
        self._server: ModbusTcpServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._t0 = 0.0
        self._images = register_images(self.values_at(0.0))

    def values_at(self, t_s: float) -> dict[str, float]:
        return scenario_values(t_s, self.seed, leak_start_s=self.leak_start_s, cycle_s=self.cycle_s)

    def scenario_time(self) -> float:
        """Scenario seconds since :meth:`start` (0 before)."""
        if self._server is None:
            return 0.0
        return (asyncio.get_running_loop().time() - self._t0) * self.time_scale

    def restart_scenario(self) -> None:
        """Scenario time 0 now (call on the simulator's loop): the demo starts its script when
        the agent polls, however long the agent took to start."""
        if self._server is None:
            raise RuntimeError("simulator not started")
        self._t0 = asyncio.get_running_loop().time()
        self._refresh()

    def refusing(self) -> bool:
        """Is the scripted refusal on now?"""
        if self.refusal_at_s is None:
            return False
        u = self.scenario_time() % self.cycle_s - self.refusal_at_s
        return 0.0 <= u < self.refusal_s

    async def start(self) -> None:
        """Listen and start refreshing the registers. Raises OSError if the port is taken."""
        if self._server is not None:
            raise RuntimeError("simulator already started")
        holding = [
            SimData(address=TABLE_START["holding"], count=TABLE_SIZE, values=0,
                    datatype=DataType.REGISTERS, readonly=True),
            SimData(address=HEARTBEAT_ADDRESS, values=[0], datatype=DataType.REGISTERS),
        ]  # fmt: skip
        inputs = SimData(address=TABLE_START["input"], count=TABLE_SIZE, values=0,
                         datatype=DataType.REGISTERS, readonly=True)  # fmt: skip
        coils = SimData(address=0, values=[False] * _COILS, datatype=DataType.BITS)
        no_bits = SimData(address=0, values=[False] * 16, datatype=DataType.BITS, readonly=True)
        device = SimDevice(
            id=self.unit_id,
            simdata=([coils], [no_bits], holding, [inputs]),
            action=self._on_access,
        )
        framer = FramerType.RTU if self.framing == "rtu" else FramerType.SOCKET
        server = ModbusTcpServer(device, address=(self.host, self.port), framer=framer)
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
        self._tasks = [
            asyncio.create_task(self._update_forever(), name="tank farm registers"),
            asyncio.create_task(self._watchdog(), name="tank farm heartbeat watchdog"),
        ]

    async def stop(self) -> None:
        """Stop serving (clients see their connection closed). Idempotent."""
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
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
        self._images = register_images(self.values_at(self.scenario_time()))

    async def _update_forever(self) -> None:
        while True:
            await asyncio.sleep(UPDATE_PERIOD_S)
            self._refresh()

    async def _watchdog(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0.05)
            if self.heartbeat_timeout_s <= 0 or self.heartbeat is None or self.failsafe:
                continue
            if loop.time() - self._last_beat > self.heartbeat_timeout_s:
                self.failsafe = True
                for address, value in enumerate(self.failsafe_coils):
                    self.coils[address] = value

    def _on_write(self, function_code: int, address: int, values: list[int] | list[bool]) -> None:
        if function_code in (5, 15):
            if not self.failsafe:  # forced outputs ignore the gateway until it beats again
                for k, v in enumerate(values):
                    self.coils[address + k] = bool(v)
        elif function_code in (6, 16) and address <= HEARTBEAT_ADDRESS < address + len(values):
            beat = int(values[HEARTBEAT_ADDRESS - address])
            if beat != self.heartbeat:
                self.heartbeat = beat
                self._last_beat = asyncio.get_running_loop().time()
                self.failsafe = False

    async def _on_access(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus calls this before answering: scripted refusal, writes, current images."""
        table = {3: "holding", 4: "input", 6: "holding", 16: "holding"}.get(function_code)
        lo, hi = REFUSED_SPAN
        if table == "holding" and address < hi and lo < address + count and self.refusing():
            self.refusals += 1
            return ExcCodes.ILLEGAL_ADDRESS
        if set_values is not None:
            self._on_write(function_code, address, set_values)
            return None
        if function_code == 1:  # coils: the PLC's output image, packed 16 to a register
            packed = 0
            for k, on in enumerate(self.coils):
                packed |= int(on) << k
            registers[0] = packed
        elif table is not None:
            image = self._images[table]
            registers[: len(image)] = image
        return None
