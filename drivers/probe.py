"""What the commissioning probe of a Modbus device reports (plain data)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ProbeRead", "ProbeResult"]


@dataclass(frozen=True, slots=True)
class ProbeRead:
    """Outcome of one planned request. ``rtt_ms`` is NaN when the request was not sent;
    ``data`` holds the registers (or bits as 0/1) read, empty unless ``ok``."""

    table: str
    address: int
    count: int
    tags: tuple[str, ...]
    ok: bool
    error: str
    rtt_ms: float
    data: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """Outcome of :meth:`ModbusDevice.probe`: could we connect, how did each request fare, and
    which spans the device refuses (found by bisection during the probe or earlier)."""

    device: str
    connected: bool
    error: str  # why the connection failed ("" when connected)
    reads: tuple[ProbeRead, ...]
    refusals: tuple[dict[str, object], ...] = ()

    @property
    def ok(self) -> bool:
        return self.connected and all(r.ok for r in self.reads)
