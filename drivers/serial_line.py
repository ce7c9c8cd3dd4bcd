"""Serial-line devices (ASCII lines from gas controllers, analysers): the port side.

``build_serial_line_device(cfg, ...)`` does no I/O. The device owns its serial port
exclusively (``bus`` is ``serial:<path>``; the agent's config check refuses a second user).
While entered, the port is read whenever bytes arrive (``loop.add_reader``), and every frame
is timestamped when its last byte was read; :mod:`drivers.lineproto` turns bytes into readings.

Contracts of :meth:`SerialLineDevice.poll`:
- with ``poll_request``, the request is written and the poll waits up to ``timeout_s`` for a
  frame; without it, the device pushes frames on its own;
- every tag with a reading since the last poll gives its newest reading, with that frame's
  time; a value is sent once, never again with a new timestamp;
- a tag with no reading for ``poll_interval_s + timeout_s`` (a period, plus the lateness
  allowed to a frame) gives NaN: ``STALE`` if other frames came from the device within the last
  period, ``BAD_COMM`` if nothing did (or the port cannot be opened); then again once per such
  interval. A tag sent less than that ago and not read since gives no sample in that poll;
- ``online`` is True when a frame was accepted since the previous poll;
- it never raises for communication problems. The port is (re)opened by the poll that needs it;
- recovery is the Modbus devices' (:mod:`drivers.recovery`, times from the injected
  ``monotonic``): while the device is lost (a poll without an accepted frame) the poll request
  is sent only every ``probe_interval_s`` (the polls in between make no I/O), so a device that
  answers again reads GOOD within ``max(2 x period, probe interval + period)``; only reopening
  a port that is missing or busy backs off, up to ``backoff_max_s``. A device without
  ``poll_request`` is heard whenever it pushes; only reopening its port is scheduled.

:meth:`SerialLineDevice.probe` (commissioning) opens the port, sends the poll request once (if
there is one) and waits for the first accepted frame; it writes nothing else, and leaves
``online`` and the recovery schedule alone. Frames it sees are real readings: the next poll
reports them.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType

import numpy as np
import serial

from drivers.config import SerialLineDeviceConfig, SerialPortConfig
from drivers.errors import DeviceUnavailable, DriverConfigError
from drivers.lineproto import LineProtocol
from drivers.mbchannel import open_serial
from drivers.recovery import Recovery
from drivers.types import Quality, SampleBatch

__all__ = ["LineProbeResult", "SerialLineDevice", "build_serial_line_device"]


@dataclass(frozen=True, slots=True)
class LineProbeResult:
    """Outcome of :meth:`SerialLineDevice.probe`.

    ``error`` is "" when a frame was accepted, else why not (port, no frame in time, only
    rejected frames...). ``rtt_ms`` is the wait for the first accepted frame (NaN if none).
    Counters cover the probe only: ``frames`` accepted, ``rejected`` (wrong checksum, not
    matching the pattern), ``garbage`` bytes outside frames, ``dropped`` frames (too long, cut).
    """

    device: str
    opened: bool
    request_sent: bool
    error: str
    frames: int
    rejected: int
    garbage: int
    dropped: int
    tags: tuple[str, ...]  # tags that got a reading (good or not)
    rtt_ms: float

    @property
    def ok(self) -> bool:
        return self.opened and self.frames > 0


class SerialLineDevice:
    """One device on its own serial line. See the module contract."""

    def __init__(
        self,
        *,
        cfg: SerialLineDeviceConfig,
        port: SerialPortConfig,
        tag_ids: list[int],
        clock_ms: Callable[[], int],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = cfg.name
        self.poll_interval_s = cfg.poll_interval_s
        self.timeout_s = cfg.timeout_s
        self.port = port
        self.protocol = LineProtocol(cfg)
        self.tags = cfg.tags
        self.online = False
        # the device owns its line: no neighbour whose period a probe could take
        self.recovery = Recovery(
            poll_interval_s=cfg.poll_interval_s,
            probe_interval_s=cfg.probe_interval_s,
            backoff_max_s=cfg.backoff_max_s,
            shared_line=False,
        )
        self._monotonic = monotonic
        self._tag_ids = np.asarray(tag_ids, dtype=np.int32)
        self._clock_ms = clock_ms
        self._period_ms = round(cfg.poll_interval_s * 1000)
        self._stale_ms = round((cfg.poll_interval_s + cfg.timeout_s) * 1000)
        n = len(cfg.tags)
        self._value = np.full(n, np.nan)
        self._quality = np.full(n, Quality.BAD_COMM, dtype=np.uint8)
        self._ts = np.zeros(n, dtype=np.int64)
        self._fresh = np.zeros(n, dtype=bool)  # a reading not yet sent
        self._readings = np.zeros(n, dtype=np.int64)  # readings per tag (a counter)
        self._last_sent = np.full(n, -(2**62), dtype=np.int64)  # ts of the last good-or-not send
        self._frames_at_poll = 0
        self._last_frame_ms = -(2**62)
        self._serial: serial.Serial | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._arrived = asyncio.Event()
        self.read_errors = 0  # times the port failed while open (closed, reopened by a poll)
        self.lost_reason = ""  # why no frame came: timeout, crc, framing, port_missing...
        self.last_error = ""
        self.lost_at_ms = 0
        self.last_outage_ms = 0  # duration of the last outage, set when frames came back
        self._open_error: DeviceUnavailable | None = None
        self._rejected_at_poll = 0

    def __repr__(self) -> str:
        return f"<SerialLineDevice {self.name} {self.port.path}>"

    @property
    def bus(self) -> str:
        """``serial:<path>``: the device is the only user of its line."""
        return f"serial:{self.port.path}"

    async def __aenter__(self) -> SerialLineDevice:
        self._loop = asyncio.get_running_loop()
        self._arrived = asyncio.Event()
        # Nothing can be missing before the device had one full period to speak: the staleness
        # clocks start now, so start-up does not report every tag BAD_COMM (a false fault).
        self._last_sent[:] = self._clock_ms()
        with contextlib.suppress(DeviceUnavailable):
            self._open()  # early, so pushed frames are not lost; else the first poll retries
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close()
        self._loop = None

    # -- port ------------------------------------------------------------------------------

    def _open(self) -> None:
        if self._serial is not None:
            return
        assert self._loop is not None, "use the device as an async context manager"
        p = self.port
        ser = open_serial(
            self.name, path=p.path, baudrate=p.baudrate, bytesize=p.bytesize,
            parity=p.parity, stopbits=p.stopbits,
        )  # fmt: skip
        self._serial = ser
        self._loop.add_reader(ser.fileno(), self._on_readable)

    def _close(self) -> None:
        if self._serial is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(self._serial.fileno())
        with contextlib.suppress(OSError, serial.SerialException):
            self._serial.close()
        self._serial = None

    def _on_readable(self) -> None:
        assert self._serial is not None
        try:
            data = os.read(self._serial.fileno(), 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the other end went away (EOF / EIO): reopened by the next poll
            self.read_errors += 1
            self._close()
            return
        self.feed(data)

    def feed(self, data: bytes) -> None:
        """Bytes read from the line (called by the reader; public for the sans-I/O tests)."""
        before = self.protocol.frames
        readings = self.protocol.feed(data)
        if self.protocol.frames == before:
            return
        now = self._clock_ms()
        self._last_frame_ms = now
        for r in readings:
            self._value[r.tag], self._quality[r.tag], self._ts[r.tag] = r.value, r.quality, now
            self._fresh[r.tag] = True
            self._readings[r.tag] += 1
        self._arrived.set()

    # -- polling ---------------------------------------------------------------------------

    async def poll(self) -> SampleBatch:
        """One sample per tag that has news (see the module contract); never raises."""
        request = self.protocol.request
        self._open_error = None
        started = self._monotonic()
        tried = self.recovery.allow(started)
        if tried:
            if request:
                if self.recovery.lost:
                    self.recovery.probes += 1
                await self._ask(request)
            else:
                try:
                    self._open()
                except DeviceUnavailable as exc:
                    self._open_error = exc
        now = self._clock_ms()
        heard = self.protocol.frames > self._frames_at_poll
        self._frames_at_poll = self.protocol.frames
        self._track(heard, tried, now)
        if heard:
            self.recovery.succeeded(self._monotonic())
        elif tried and (request or self._open_error is not None):
            # counted from the start of the poll, so probes stay on the poll slots
            self.recovery.failed(started, self.lost_reason)
        self.online = heard
        fresh = self._fresh.copy()
        lapsed = ~fresh & (now - self._last_sent >= self._stale_ms)
        recent = now - self._last_frame_ms <= self._period_ms
        missing = Quality.STALE if recent else Quality.BAD_COMM
        pick = fresh | lapsed
        value = np.where(fresh, self._value, np.nan)[pick]
        quality = np.where(fresh, self._quality, missing).astype(np.uint8)[pick]
        ts = np.where(fresh, self._ts, now)[pick]
        self._last_sent[pick] = ts
        self._fresh[:] = False
        return SampleBatch(tag=self._tag_ids[pick], ts_ms=ts, value=value, quality=quality)

    def _track(self, heard: bool, tried: bool, now: int) -> None:
        """Keep the reason of an outage and, when frames come back, its duration (a poll
        that made no I/O while waiting for the next probe keeps the reason it had)."""
        rejected = self.protocol.rejected - self._rejected_at_poll
        self._rejected_at_poll = self.protocol.rejected
        if heard:
            if self.lost_reason:
                self.last_outage_ms = max(0, now - self.lost_at_ms)
            self.lost_reason = self.last_error = ""
            return
        if not self.lost_reason:
            self.lost_at_ms = now
        elif not tried:
            return
        if self._open_error is not None:
            self.lost_reason, self.last_error = self._open_error.kind, self._open_error.reason
        elif rejected:
            self.lost_reason = "crc" if self.protocol.cfg.checksum != "none" else "framing"
            self.last_error = f"{rejected} frames rejected (checksum, framing or pattern)"
        else:
            self.lost_reason = "timeout"
            self.last_error = f"no valid frame within {self.poll_interval_s + self.timeout_s:g} s"

    def health(self) -> dict[str, object]:
        """What the agent reports about this device (events, status, commissioning)."""
        f = self.protocol.framer
        return {
            "device": self.name,
            "online": self.online,
            "reason": self.lost_reason,
            "error": self.last_error,
            "lost_at_ms": self.lost_at_ms,
            "last_outage_ms": self.last_outage_ms,
            "frames": self.protocol.frames,
            "rejected": self.protocol.rejected,
            "garbage": f.garbage,
            "dropped": f.dropped,
            "read_errors": self.read_errors,
            "probes": self.recovery.probes,
            "skipped": self.recovery.skipped,
        }

    async def _ask(self, request: bytes) -> bool:
        """Write the poll request and wait for a frame; True when one came in time."""
        try:
            self._open()
            assert self._serial is not None
            self._arrived.clear()
            os.write(self._serial.fileno(), request)
        except DeviceUnavailable as exc:
            self._open_error = exc
            return False
        except OSError:
            self.read_errors += 1
            self._close()
            return False
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._arrived.wait()
        except TimeoutError:
            return False
        return True

    async def probe(self) -> LineProbeResult:
        """Read-only check for commissioning (see the module docstring).

        Waits ``timeout_s`` after the poll request, or ``poll_interval_s + timeout_s`` for a
        device that pushes frames. Use it inside ``async with device``; never raises for
        communication problems.
        """
        p, f = self.protocol, self.protocol.framer
        before = (p.frames, p.rejected, f.garbage, f.dropped, self._readings.copy())
        opened = sent = False
        error = ""
        start = time.perf_counter()
        rtt_ms = math.nan
        try:
            self._open()
            opened = True
            assert self._serial is not None
            self._arrived.clear()
            if p.request:
                os.write(self._serial.fileno(), p.request)
                sent = True
            wait_s = self.timeout_s if p.request else self.poll_interval_s + self.timeout_s
            async with asyncio.timeout(wait_s):
                while p.frames == before[0]:  # rejected frames also wake the reader up
                    await self._arrived.wait()
                    self._arrived.clear()
            rtt_ms = (time.perf_counter() - start) * 1000.0
        except DeviceUnavailable as exc:
            error = exc.reason
        except TimeoutError:  # before OSError, its base class
            error = f"no valid frame within {wait_s:g} s"
        except OSError as exc:
            self._close()
            error = f"cannot write the poll request to {self.port.path}: {exc}"
        rejected = p.rejected - before[1]
        if error and rejected:
            error += f" ({rejected} frames rejected: check checksum, framing and pattern)"
        got = np.flatnonzero(self._readings > before[4])
        return LineProbeResult(
            device=self.name,
            opened=opened,
            request_sent=sent,
            error=error,
            frames=p.frames - before[0],
            rejected=rejected,
            garbage=f.garbage - before[2],
            dropped=f.dropped - before[3],
            tags=tuple(self.tags[int(i)].name for i in got),
            rtt_ms=rtt_ms,
        )


def build_serial_line_device(
    cfg: SerialLineDeviceConfig,
    *,
    tag_index: Mapping[str, int],
    serial_ports: Mapping[str, SerialPortConfig],
    clock_ms: Callable[[], int],
    monotonic: Callable[[], float] = time.monotonic,
) -> SerialLineDevice:
    """Build (no I/O) the device for ``cfg``; raises :class:`DriverConfigError` for a tag
    missing from ``tag_index``, an unknown serial port, or framing/parsing settings that
    cannot work. ``monotonic`` drives the recovery schedule (injected in tests)."""
    missing = [t.name for t in cfg.tags if t.name not in tag_index]
    if missing:
        raise DriverConfigError(f"device {cfg.name!r}: tags not in the tag table: {missing}")
    port = serial_ports.get(cfg.serial_port)
    if port is None:
        raise DriverConfigError(
            f"device {cfg.name!r}: serial_port {cfg.serial_port!r} is not defined in "
            f"[[serial_ports]] (known: {sorted(serial_ports)})"
        )
    return SerialLineDevice(
        cfg=cfg,
        port=port,
        tag_ids=[tag_index[t.name] for t in cfg.tags],
        clock_ms=clock_ms,
        monotonic=monotonic,
    )
