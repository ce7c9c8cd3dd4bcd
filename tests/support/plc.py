"""The tank-farm PLC simulator (a real pymodbus server) on its own event loop thread, for tests
whose agent is another process; ``coils`` reads its output coils with pymodbus' own client."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from pymodbus.client import ModbusTcpClient

from provisioning.simulator import TankFarmSimulator

__all__ = ["PlcThread", "coils"]


class PlcThread:
    """``TankFarmSimulator(port=port, **kwargs)`` served until :meth:`close`."""

    def __init__(self, port: int, **kwargs: Any) -> None:
        self.sim = TankFarmSimulator(port=port, **kwargs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._up = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        assert self._up.wait(10), "simulator did not start"

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with self.sim:
            self._up.set()
            await self._stop.wait()

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def coils(port: int) -> list[bool]:
    """Coils 0..2 (beacon, siren, shutdown request) of the simulator on ``port``."""
    client = ModbusTcpClient("127.0.0.1", port=port)
    client.connect()
    try:
        rr = client.read_coils(0, count=3, device_id=1)
        return [bool(b) for b in rr.bits[:3]]
    finally:
        client.close()
