"""Alarm outputs (beacons, sirens, a relay asking for a shutdown): the only writes to devices.

Monitoring-grade, not a safety function: the certified gas detection system (GB/T 50493-2019
§3.0.8) and the coal-mine safety monitoring system (AQ 6201) keep the safety function; these
outputs repeat an alarm the gateway has seen (docs/outputs.md).

Invariants:
- an :class:`OutputWriter` writes only to its configured address and its heartbeat register
  (``allowed``); any other address raises :class:`DriverConfigError` before anything is sent.
  :mod:`drivers.mbproto`'s write requests are built in this module only (a test checks it);
- a write is FC05 (one coil) or FC06 (one register); every write is read back (FC01 / FC03)
  and compared: a mismatch or a failed read-back is a failed write;
- the state is written when it changes and re-asserted every ``reassert_s`` (a PLC restart or
  a manual override is corrected); a failed write is retried after ``RETRY_S`` (2 s, or
  ``reassert_s`` if shorter), a failed heartbeat after ``max(period_s, RETRY_S)``, so a dead
  device costs its shared link a bounded share of timeouts;
- polarity: ``energise_in_alarm`` writes ``on`` (coil true / ``on_value``) in alarm;
  ``deenergise_in_alarm`` writes ``off`` in alarm and ``on`` otherwise, so a broken wire, a dead
  gateway or a PLC that times out the heartbeat all look like an alarm (fail-safe);
- heartbeat: an optional holding register incremented (mod 65536) every ``period_s``; the PLC
  (or the simulator) drives the outputs to their alarm state when it stops changing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec

from drivers.config import (
    ModbusRtuDeviceConfig,
    ModbusTcpDeviceConfig,
    SerialLineDeviceConfig,
    SerialPortConfig,
)
from drivers.errors import BadReply, DeviceUnavailable, DriverConfigError, ProtocolError
from drivers.mblink import Link
from drivers.mbproto import PduRequest, read_request, write_coils, write_registers
from drivers.modbus_build import device_link

__all__ = [
    "RETRY_S",
    "HeartbeatConfig",
    "OutputConfig",
    "OutputWriter",
    "WriteResult",
    "build_output_writers",
    "output_problems",
]

Name = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]
Address = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Register = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Seconds = Annotated[float, msgspec.Meta(ge=0.1, le=3600.0)]
RETRY_S = 2.0


class HeartbeatConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A holding register the gateway increments every ``period_s`` so the PLC knows it is
    alive (the PLC drives the outputs to their alarm state when it stops changing)."""

    address: Address
    period_s: Seconds = 1.0


class OutputConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Where one alarm output is written: ``device`` names a Modbus device of ``[[devices]]``
    (its link and unit id are used); ``table`` ``coil`` (FC05) or ``holding`` (FC06)."""

    name: Name
    device: Name
    table: Literal["coil", "holding"] = "coil"
    address: Address
    polarity: Literal["energise_in_alarm", "deenergise_in_alarm"] = "energise_in_alarm"
    on_value: Register = 1  # holding only: the energised value
    off_value: Register = 0
    reassert_s: Seconds = 10.0
    heartbeat: HeartbeatConfig | None = None


@dataclass(frozen=True, slots=True)
class WriteResult:
    """One write and its read-back. ``ok`` only when the read-back equals ``value``."""

    output: str
    device: str
    table: str
    address: int
    value: int
    alarm: bool  # the alarm state this write expresses (False for a heartbeat)
    heartbeat: bool
    ok: bool
    reason: str  # "" when ok; else verify_mismatch, timeout, exception:<code>, bad_reply...
    error: str
    changed: bool = True  # False for a re-assertion of the value already verified

    def as_dict(self) -> dict[str, object]:
        return {
            "output": self.output,
            "device": self.device,
            "table": self.table,
            "address": self.address,
            "value": self.value,
            "alarm": self.alarm,
            "heartbeat": self.heartbeat,
            "ok": self.ok,
            "reason": self.reason,
            "error": self.error,
            "changed": self.changed,
        }


class OutputWriter:
    """Writes one output (and its heartbeat) on a device's link. See the module invariants."""

    def __init__(
        self,
        *,
        cfg: OutputConfig,
        link: Link,
        unit_id: int,
        timeout_s: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.link = link
        self.unit_id = unit_id
        self.timeout_s = timeout_s
        self.allowed = frozenset(
            {(cfg.table, cfg.address)}
            | ({("holding", cfg.heartbeat.address)} if cfg.heartbeat else set())
        )
        self._monotonic = monotonic
        self._written: int | None = None  # value last verified on the device
        self._last_write = -1e18
        self._failed = False  # the last write of the output failed
        self._beat = 0
        self._last_beat = -1e18
        self._beat_failed = False

    async def __aenter__(self) -> OutputWriter:
        self.link.enter()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.link.leave()

    def value_for(self, alarm: bool) -> int:
        energise = alarm == (self.cfg.polarity == "energise_in_alarm")
        if self.cfg.table == "coil":
            return int(energise)
        return self.cfg.on_value if energise else self.cfg.off_value

    async def apply(self, alarm: bool) -> WriteResult | None:
        """Write the state for ``alarm`` if it changed, failed last time, or is due for
        re-assertion; None when nothing had to be written."""
        value = self.value_for(alarm)
        now = self._monotonic()
        if value == self._written and now - self._last_write < self.cfg.reassert_s:
            return None
        if self._failed and now - self._last_write < min(RETRY_S, self.cfg.reassert_s):
            return None
        result = await self._write(self.cfg.table, self.cfg.address, value, alarm=alarm,
                                   changed=value != self._written)  # fmt: skip
        self._written = value if result.ok else None
        self._failed = not result.ok
        self._last_write = now
        return result

    async def heartbeat(self) -> WriteResult | None:
        """Increment the heartbeat register when due; None when not due or not configured."""
        hb = self.cfg.heartbeat
        now = self._monotonic()
        wait = max(hb.period_s, RETRY_S) if hb is not None and self._beat_failed else 0.0
        if hb is None or now - self._last_beat < max(hb.period_s, wait):
            return None
        self._last_beat = now
        self._beat = (self._beat + 1) % 65536
        result = await self._write("holding", hb.address, self._beat, alarm=False, heartbeat=True)
        self._beat_failed = not result.ok
        return result

    async def _write(self, table: str, address: int, value: int, *, alarm: bool,
                     heartbeat: bool = False, changed: bool = True) -> WriteResult:  # fmt: skip
        if (table, address) not in self.allowed:
            raise DriverConfigError(
                f"output {self.cfg.name!r}: {table} {address} is not a configured output address"
            )
        if table == "coil":
            write: PduRequest = write_coils(address, [bool(value)])
            back = read_request("coil", address, 1)
        else:
            write, back = write_registers(address, [value]), read_request("holding", address, 1)
        reason = error = ""
        async with self.link.owned():
            try:
                await self.link.transact(write, self.unit_id, self.cfg.device, self.timeout_s)
                data = await self.link.transact(back, self.unit_id, self.cfg.device,
                                                self.timeout_s)  # fmt: skip
                if int(data[0]) != value:
                    reason, error = "verify_mismatch", f"read back {int(data[0])}, wrote {value}"
            except DeviceUnavailable as exc:
                reason, error = exc.kind, exc.reason
            except ProtocolError as exc:
                reason, error = f"exception:{exc.exception_code}", exc.reason
            except BadReply as exc:
                reason, error = f"bad_reply:{exc.reason}", exc.detail
        return WriteResult(self.cfg.name, self.cfg.device, table, address, value, alarm,
                           heartbeat, not reason, reason, error, changed)  # fmt: skip


ModbusConfig = ModbusTcpDeviceConfig | ModbusRtuDeviceConfig
AnyConfig = ModbusTcpDeviceConfig | ModbusRtuDeviceConfig | SerialLineDeviceConfig


def output_problems(
    outputs: Sequence[OutputConfig], devices: Sequence[AnyConfig]
) -> list[tuple[str, str, str]]:
    """``(key, message, hint)`` for every output that cannot work (no I/O)."""
    by_name = {d.name: d for d in devices}
    problems: list[tuple[str, str, str]] = []
    seen: dict[str, int] = {}
    targets: dict[tuple[str, str, int], str] = {}
    for k, out in enumerate(outputs):
        key = f'outputs[{k}] "{out.name}"'
        if out.name in seen:
            problems.append((f"{key}.name", f'duplicate output "{out.name}"',
                             "give every output its own name"))  # fmt: skip
        seen[out.name] = k
        dev = by_name.get(out.device)
        if dev is None:
            known = ", ".join(f'"{n}"' for n, d in by_name.items() if not _is_line(d)) or "none"
            problems.append((f"{key}.device", f'unknown device "{out.device}"',
                             f"name a Modbus device of [[devices]] (known: {known})"))  # fmt: skip
        elif _is_line(dev):
            problems.append((f"{key}.device", f'"{out.device}" is a serial-line device',
                             "outputs are written to Modbus devices only"))  # fmt: skip
        if out.table == "coil" and (out.on_value, out.off_value) != (1, 0):
            hint = 'remove on_value / off_value, or use table = "holding"'
            problems.append((f"{key}.on_value", "a coil is on or off", hint))
        if out.table == "holding" and out.on_value == out.off_value:
            problems.append((f"{key}.on_value", "on_value equals off_value",
                             "choose two different register values"))  # fmt: skip
        places = [(out.table, out.address, "address")]
        if out.heartbeat is not None:
            places.append(("holding", out.heartbeat.address, "heartbeat.address"))
        for table, address, field in places:
            target = (out.device, table, address)
            other = targets.get(target)
            if other is not None and not (field == "heartbeat.address" and other == "heartbeat"):
                problems.append((f"{key}.{field}", f"{table} {address} of {out.device} is "
                                 f"written by {other} too", "one writer per address"))  # fmt: skip
            targets[target] = "heartbeat" if field == "heartbeat.address" else f'"{out.name}"'
    return problems


def _is_line(cfg: AnyConfig) -> bool:
    return isinstance(cfg, SerialLineDeviceConfig)


def build_output_writers(
    outputs: Sequence[OutputConfig],
    *,
    devices: Sequence[AnyConfig],
    serial_ports: Mapping[str, SerialPortConfig],
    monotonic: Callable[[], float] = time.monotonic,
) -> list[OutputWriter]:
    """Build (no I/O) one writer per output, on the link its device is polled on."""
    problems = output_problems(outputs, devices)
    if problems:
        key, message, hint = problems[0]
        raise DriverConfigError(f"{key}: {message}; {hint}")
    by_name = {d.name: d for d in devices}
    writers = []
    for out in outputs:
        dev = by_name[out.device]
        assert isinstance(dev, ModbusTcpDeviceConfig | ModbusRtuDeviceConfig)
        writers.append(
            OutputWriter(
                cfg=out,
                link=device_link(dev, serial_ports),
                unit_id=dev.unit_id,
                timeout_s=dev.timeout_s,
                monotonic=monotonic,
            )  # fmt: skip
        )
    return writers
