"""Recovery of a lost serial-line device (the Modbus devices' schedule, drivers.recovery): real
bytes on a pseudo-terminal, the test playing the gas controller; time is an injected clock
(monotonic and wall clock move together, by hand)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from drivers import Quality, SerialLineDevice, build_device
from drivers.config import SerialLineDeviceConfig, SerialLineTagConfig, SerialPortConfig
from tests.drivers.peers import ManualClock
from tests.drivers.test_serial_line import pty, sentence

pytestmark = pytest.mark.integration

TIMEOUT_S = 0.2
REQUEST = b"READ\r\n"


def device(path: str, clock: ManualClock, **kw: object) -> SerialLineDevice:
    cfg = SerialLineDeviceConfig(
        name="gas", serial_port="p", framing="start_end", start="$", end="\r\n",
        checksum="xor", key_field=1, poll_request=REQUEST.decode(),
        tags=(SerialLineTagConfig(name="CH1", key="1", field=2),),
        **{"poll_interval_s": 1.0, "timeout_s": TIMEOUT_S, **kw},  # type: ignore[arg-type]
    )  # fmt: skip
    port = SerialPortConfig(name="p", path=path, baudrate=9600)
    dev = build_device(cfg, tag_index={"CH1": 0}, serial_ports={"p": port}, monotonic=clock,
                       clock_ms=lambda: 1_000_000 + int(clock.now * 1000))  # fmt: skip
    assert isinstance(dev, SerialLineDevice)
    return dev


class Controller:
    """The device on the far end of the pty: counts poll requests, answers while ``alive``."""

    def __init__(self, master: int) -> None:
        self.master = master
        self.alive = True
        self.requests: list[float] = []  # injected time of each request read
        self.clock: ManualClock | None = None

    def on_readable(self) -> None:
        data = os.read(self.master, 100)
        for _ in range(data.count(REQUEST)):
            self.requests.append(self.clock.now if self.clock else 0.0)
            if self.alive:
                os.write(self.master, sentence(1, "1.5"))


def test_a_silent_serial_line_device_is_probed_at_the_fixed_interval_not_every_period() -> None:
    async def main(master: int, path: str) -> tuple[list[float], list[str], list[bool], dict]:
        clock, gas = ManualClock(), Controller(master)
        gas.clock, gas.alive = clock, False
        loop = asyncio.get_running_loop()
        loop.add_reader(master, gas.on_readable)
        seen, slow = [], []
        try:
            async with device(path, clock) as dev:
                for t in range(9):
                    clock.now = float(t)
                    start = time.monotonic()
                    batch = await dev.poll()
                    await asyncio.sleep(0.02)  # let the controller read what was written
                    slow.append(time.monotonic() - start > TIMEOUT_S * 0.8)
                    seen.append(",".join(Quality(int(q)).name for q in batch.quality))
                health = dev.health()
        finally:
            loop.remove_reader(master)
        return gas.requests, seen, slow, health

    with pty() as (master, path):
        requests, seen, slow, health = asyncio.run(main(master, path))
    assert requests == [0.0, 2.0, 4.0, 6.0, 8.0]  # one probe every 2 s, nothing in between
    assert slow == [t % 2 == 0 for t in range(9)]  # a timeout only on a probe
    assert set(seen) <= {"", "BAD_COMM"} and "BAD_COMM" in seen
    assert health["reason"] == "timeout" and health["probes"] == 4 and health["skipped"] == 4


@pytest.mark.parametrize(("period", "probe"), [(1.0, 2.0), (0.5, 2.0), (3.0, 2.0)])
def test_a_serial_line_device_answering_again_reads_good_within_the_bound(
    period: float, probe: float
) -> None:
    """After a 33 s outage, answering again just after a failed probe (the worst case): GOOD
    within max(2 x period, probe interval + period)."""

    async def main(master: int, path: str) -> tuple[float, float, dict[str, object]]:
        clock, gas = ManualClock(), Controller(master)
        gas.clock = clock
        loop = asyncio.get_running_loop()
        loop.add_reader(master, gas.on_readable)
        try:
            async with device(path, clock, poll_interval_s=period, probe_interval_s=probe,
                              timeout_s=min(TIMEOUT_S, period)) as dev:  # fmt: skip
                t = 0.0
                clock.now = t
                assert (await dev.poll()).quality[0] == Quality.GOOD
                gas.alive = False
                while True:
                    t += period
                    clock.now = t
                    probes = dev.recovery.probes
                    await dev.poll()
                    if t >= 33.0 and dev.recovery.probes > probes:
                        break
                await asyncio.sleep(0.02)
                back_at, gas.alive = t + 0.001, True
                while True:
                    t += period
                    clock.now = t
                    batch = await dev.poll()
                    if len(batch.quality) and batch.quality[0] == Quality.GOOD:
                        return t - back_at, t, dev.health()
        finally:
            loop.remove_reader(master)

    with pty() as (master, path):
        delay, good_at, health = asyncio.run(main(master, path))
    assert delay <= max(2 * period, probe + period)
    assert health["online"] and health["reason"] == ""
    assert health["last_outage_ms"] == round((good_at - period) * 1000)  # first miss to GOOD


def test_reopening_a_missing_port_backs_off_and_keeps_its_reason(tmp_path: Path) -> None:
    """Only reopening the port backs off (probe x 1, 2, 4..., capped at backoff_max_s); the
    polls in between make no I/O and keep the reason ``port_missing``."""
    path = tmp_path / "ttyUSB0"

    async def main() -> tuple[list[int], set[str]]:
        clock = ManualClock()
        opened, reasons = [], set()
        async with device(str(path), clock, backoff_max_s=10.0) as dev:
            for t in range(30):
                clock.now = float(t)
                skipped = dev.recovery.skipped
                await dev.poll()
                if dev.recovery.skipped == skipped:
                    opened.append(t)
                reasons.add(dev.lost_reason)
        return opened, reasons

    opened, reasons = asyncio.run(main())
    assert opened == [0, 2, 6, 14, 24]  # 2, 4, 8, then 10 s apart
    assert reasons == {"port_missing"}
