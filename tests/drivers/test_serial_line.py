"""SerialLineDevice over a real pseudo-terminal: real bytes, pushed and polled, with faults."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers import LineProbeResult, Quality, SampleBatch, SerialLineDevice, build_device
from drivers.config import SerialLineDeviceConfig, SerialLineTagConfig, SerialPortConfig
from drivers.lineproto import checksum_text

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def pty() -> Iterator[tuple[int, str]]:
    """(master fd, slave path) of a raw pseudo-terminal; the device opens the slave."""
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        yield master, os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)


class Clock:
    def __init__(self) -> None:
        self.ms = 1_000_000

    def __call__(self) -> int:
        return self.ms


def sentence(channel: int, value: str) -> bytes:
    body = f"GAS,{channel},{value},LEL".encode()
    return b"$" + body + b"*" + checksum_text("xor", body) + b"\r\n"


def device(path: str, clock: Clock, **kw: object) -> SerialLineDevice:
    cfg = SerialLineDeviceConfig(
        name="gas",
        serial_port="p",
        framing="start_end",
        start="$",
        end="\r\n",
        checksum="xor",
        key_field=1,
        tags=(
            SerialLineTagConfig(name="CH1", key="1", field=2),
            SerialLineTagConfig(name="CH2", key="2", field=2),
        ),
        **{"poll_interval_s": 1.0, "timeout_s": 0.3, **kw},  # type: ignore[arg-type]
    )
    port = SerialPortConfig(name="p", path=path, baudrate=9600)
    dev = build_device(cfg, tag_index={"CH1": 10, "CH2": 11}, serial_ports={"p": port},
                       clock_ms=clock)  # fmt: skip
    assert isinstance(dev, SerialLineDevice)
    return dev


def rows(batch: SampleBatch) -> list[tuple[int, float | None, str, int]]:
    return [
        (int(t), None if math.isnan(v) else float(v), Quality(int(q)).name, int(ts))
        for t, v, q, ts in zip(batch.tag, batch.value, batch.quality, batch.ts_ms, strict=True)
    ]


async def arrive(master: int, data: bytes, *, chunk: int = 0) -> None:
    """Write ``data`` (optionally a few bytes at a time) and let the reader take it."""
    pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)] if chunk else [data]
    for piece in pieces:
        os.write(master, piece)
        await asyncio.sleep(0.005 if chunk else 0)
    await asyncio.sleep(0.05)


def test_pushed_lines_give_each_value_once_with_its_frames_time_then_stale_then_bad_comm() -> None:
    clock = Clock()

    async def main(master: int, path: str) -> list[list[tuple[int, float | None, str, int]]]:
        out = []
        async with device(path, clock) as dev:
            clock.ms = 1_000_100
            await arrive(master, sentence(1, "12.5") + sentence(2, "3.0"))
            clock.ms = 1_000_200
            out.append(rows(await dev.poll()))  # both fresh, stamped 1_000_100
            clock.ms = 1_000_900
            out.append(rows(await dev.poll()))  # nothing new, sent < 1.3 s ago: no sample
            clock.ms = 1_001_200
            await arrive(master, sentence(1, "13.0"))
            clock.ms = 1_001_500
            out.append(rows(await dev.poll()))  # CH1 fresh, CH2 1.4 s old and the line alive
            clock.ms = 1_004_000
            out.append(rows(await dev.poll()))  # silence for 2.8 s
            assert not dev.online
        return out

    with pty() as (master, path):
        polls = asyncio.run(main(master, path))
    assert polls == [
        [(10, 12.5, "GOOD", 1_000_100), (11, 3.0, "GOOD", 1_000_100)],
        [],
        [(10, 13.0, "GOOD", 1_001_200), (11, None, "STALE", 1_001_500)],
        [(10, None, "BAD_COMM", 1_004_000), (11, None, "BAD_COMM", 1_004_000)],
    ]


def test_garbage_bad_checksums_and_byte_by_byte_arrival_give_the_same_values() -> None:
    clock = Clock()

    async def main(master: int, path: str) -> tuple[list[tuple[int, float | None, str, int]], int]:
        async with device(path, clock) as dev:
            bad = sentence(2, "99.9").replace(b"99.9", b"11.1")
            stream = b"\x00\xffnoise" + sentence(1, "7.5") + b"$GAS,1,8" + bad + sentence(2, "4")
            await arrive(master, stream, chunk=3)
            return rows(await dev.poll()), dev.protocol.rejected

    with pty() as (master, path):
        got, rejected = asyncio.run(main(master, path))
    assert got == [(10, 7.5, "GOOD", 1_000_000), (11, 4.0, "GOOD", 1_000_000)]
    assert rejected == 1  # the bad checksum; the cut-off "$GAS,1,8" was dropped by the framer


def test_a_polled_device_answers_its_request_and_a_silent_one_gives_bad_comm_in_time() -> None:
    clock = Clock()

    async def main(master: int, path: str) -> list[tuple[list[str], bool]]:
        loop = asyncio.get_running_loop()
        answering = [True]

        def respond() -> None:
            if os.read(master, 100) == b"READ\r\n" and answering[0]:
                os.write(master, sentence(1, "1.5") + sentence(2, "2.5"))

        loop.add_reader(master, respond)
        out = []
        try:
            async with device(path, clock, poll_request="READ\r\n") as dev:
                batch = await dev.poll()
                out.append(([r[2] for r in rows(batch)], dev.online))
                answering[0] = False
                clock.ms += 2_000
                start = loop.time()
                batch = await dev.poll()
                assert loop.time() - start < 0.3 + 0.2
                out.append(([r[2] for r in rows(batch)], dev.online))
        finally:
            loop.remove_reader(master)
        return out

    with pty() as (master, path):
        assert asyncio.run(main(master, path)) == [
            (["GOOD", "GOOD"], True),
            (["BAD_COMM", "BAD_COMM"], False),
        ]


def test_a_missing_port_gives_bad_comm_and_never_raises(tmp_path: Path) -> None:
    clock = Clock()

    async def main() -> list[str]:
        async with device(str(tmp_path / "ttyNONE"), clock) as dev:
            clock.ms += 5_000
            return [r[2] for r in rows(await dev.poll())]

    assert asyncio.run(main()) == ["BAD_COMM", "BAD_COMM"]


def test_a_push_device_is_not_reported_bad_before_its_first_period_has_passed(
    tmp_path: Path,
) -> None:
    clock = Clock()

    async def main() -> tuple[list[str], bool, list[str]]:
        async with device(str(tmp_path / "ttyNONE"), clock) as dev:
            at_start = [r[2] for r in rows(await dev.poll())]
            clock.ms += 5_000
            return at_start, dev.online, [r[2] for r in rows(await dev.poll())]

    at_start, online, later = asyncio.run(main())
    assert at_start == []  # nothing known yet: no sample, so no false fault alarm
    assert online is False
    assert later == ["BAD_COMM", "BAD_COMM"]


def test_probe_sends_the_poll_request_once_and_reports_the_answering_tags() -> None:
    clock = Clock()

    async def main(master: int, path: str) -> tuple[LineProbeResult, list[bytes], bool]:
        loop = asyncio.get_running_loop()
        requests: list[bytes] = []

        def respond() -> None:
            requests.append(os.read(master, 100))
            os.write(master, b"junk" + sentence(1, "1.5"))

        loop.add_reader(master, respond)
        try:
            async with device(path, clock, poll_request="READ\r\n") as dev:
                result = await dev.probe()
                await asyncio.sleep(0.05)
                return result, requests, dev.online
        finally:
            loop.remove_reader(master)

    with pty() as (master, path):
        result, requests, online = asyncio.run(main(master, path))
    assert requests == [b"READ\r\n"]  # one request, nothing else written
    assert result.ok
    assert (result.opened, result.request_sent, result.error) == (True, True, "")
    assert (result.frames, result.rejected, result.garbage) == (1, 0, 4)
    assert result.tags == ("CH1",)
    assert 0.0 < result.rtt_ms < 300.0
    assert not online  # a probe does not change the device's state


def test_probe_of_a_pushing_device_with_only_bad_frames_says_why_it_failed() -> None:
    clock = Clock()

    async def main(master: int, path: str) -> LineProbeResult:
        async with device(path, clock, poll_interval_s=0.2, timeout_s=0.1) as dev:
            bad = sentence(1, "5.0").replace(b"5.0", b"6.0")
            probe = asyncio.create_task(dev.probe())
            await arrive(master, bad)
            return await probe

    with pty() as (master, path):
        result = asyncio.run(main(master, path))
    assert not result.ok
    assert (result.opened, result.request_sent, result.frames, result.rejected) == (
        True, False, 0, 1,
    )  # fmt: skip
    assert "no valid frame within 0.3 s" in result.error
    assert "1 frames rejected" in result.error
    assert result.tags == ()


def test_probe_of_a_missing_port_reports_it_without_raising(tmp_path: Path) -> None:
    async def main() -> LineProbeResult:
        async with device(str(tmp_path / "ttyNONE"), Clock(), poll_request="READ\r\n") as dev:
            return await dev.probe()

    result = asyncio.run(main())
    assert (result.ok, result.opened, result.request_sent) == (False, False, False)
    assert "cannot open" in result.error
