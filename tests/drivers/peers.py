"""Real peers for the driver tests: a pymodbus server with known registers, a silent TCP peer,
a socat pty pair. The register contents are written by hand from byte patterns (not produced by
the codec under test), and EXPECTED lists what each tag must read as.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.config import CurrentLoopConfig, TagConfig

# holding registers 0..41, address -> raw register; hand-encoded
HOLDING: dict[int, int] = {
    0: 0x1234,
    1: 0xFFFE,
    2: 0x0102, 3: 0x0304,  # int32 0x01020304 ABCD
    4: 0x0304, 5: 0x0102,  # CDAB
    6: 0x0201, 7: 0x0403,  # BADC
    8: 0x0403, 9: 0x0201,  # DCBA
    10: 0xFFFF, 11: 0xFFFE,  # int32 -2 / uint32 4294967294
    12: 0xC2F6, 13: 0xE979,  # float32 -123.456 ABCD
    14: 0xE979, 15: 0xC2F6,  # CDAB
    16: 0x0102, 17: 0x0304, 18: 0x0506, 19: 0x0708,  # int64 0x0102030405060708 ABCD
    20: 0x0807, 21: 0x0605, 22: 0x0403, 23: 0x0201,  # DCBA
    24: 0x8000, 25: 0x0000, 26: 0x0000, 27: 0x0001,  # uint64 2**63 + 1
    28: 0xC004, 29: 0x0000, 30: 0x0000, 31: 0x0000,  # float64 -2.5
    32: 0x0100,  # bool (register != 0)
    33: 0x0000,  # bool false
    34: 500,  # uint16 500 * 0.1 - 10 = 40
    35: 0x7FC0, 36: 0x0000,  # float32 NaN
    37: 0x0000, 38: 0x0000, 39: 0x0000, 40: 0x0000, 41: 0x0000,
}  # fmt: skip
INPUT: dict[int, int] = {
    0: 100,
    1: 200,
    2: 0xFFFF,
    3: 0b1010_0000_0000_0101,  # status word: bits 0, 2, 13, 15 set
    # 4-20 mA analog inputs, Siemens counts (0 = 4 mA, 27648 = 20 mA), int16
    4: 0,
    5: 13824,
    6: 27648,  # 4, 12, 20 mA
    7: 0xFCA0,  # -864 = 3.5 mA: wire break (NAMUR NE43 < 3.6 mA)
    8: 32400,  # 21.5 mA: transmitter fault (NE43 > 21 mA)
    9: 0xFEA8,  # -344 = 3.8 mA: below 4 mA but still a measurement
}
COILS = [True, False, True, True] + [False] * 12
DISCRETE = [False, True] + [False] * 14

SIEMENS_AI = CurrentLoopConfig(raw_span=(0, 27648), span=(0.0, 100.0))
INT32 = 0x01020304
INT64 = 0x0102030405060708

# (tag, expected value or None for NaN, expected quality name)
EXPECTED: list[tuple[TagConfig, float | None, str]] = [
    (TagConfig(name="u16", address=0, type="uint16"), 0x1234, "GOOD"),
    (TagConfig(name="u16-badc", address=0, type="uint16", byte_order="BADC"), 0x3412, "GOOD"),
    (TagConfig(name="u16-dcba", address=0, type="uint16", byte_order="DCBA"), 0x3412, "GOOD"),
    (TagConfig(name="i16", address=1, type="int16"), -2, "GOOD"),
    (TagConfig(name="u16-fffe", address=1, type="uint16"), 65534, "GOOD"),
    (TagConfig(name="i32-abcd", address=2, type="int32"), INT32, "GOOD"),
    (TagConfig(name="i32-cdab", address=4, type="int32", byte_order="CDAB"), INT32, "GOOD"),
    (TagConfig(name="i32-badc", address=6, type="int32", byte_order="BADC"), INT32, "GOOD"),
    (TagConfig(name="i32-dcba", address=8, type="int32", byte_order="DCBA"), INT32, "GOOD"),
    (TagConfig(name="i32-neg", address=10, type="int32"), -2, "GOOD"),
    (TagConfig(name="u32", address=10, type="uint32"), 4294967294, "GOOD"),
    (TagConfig(name="f32-abcd", address=12, type="float32"), -123.45600128173828, "GOOD"),
    (TagConfig(name="f32-cdab", address=14, type="float32", byte_order="CDAB"),
     -123.45600128173828, "GOOD"),
    (TagConfig(name="i64-abcd", address=16, type="int64"), float(INT64), "GOOD"),
    (TagConfig(name="i64-dcba", address=20, type="int64", byte_order="DCBA"), float(INT64),
     "GOOD"),
    (TagConfig(name="u64", address=24, type="uint64"), float(2**63 + 1), "GOOD"),
    (TagConfig(name="f64", address=28, type="float64"), -2.5, "GOOD"),
    (TagConfig(name="bool-reg", address=32, type="bool"), 1.0, "GOOD"),
    (TagConfig(name="bool-reg0", address=33, type="bool"), 0.0, "GOOD"),
    (TagConfig(name="scaled", address=34, scale=0.1, offset=-10.0), 40.0, "GOOD"),
    (TagConfig(name="out-of-range", address=34, scale=0.1, offset=-10.0, range=(0.0, 30.0)),
     None, "BAD_RANGE"),
    (TagConfig(name="f32-nan", address=35, type="float32"), None, "BAD_RANGE"),
    (TagConfig(name="in0", table="input", address=0), 100, "GOOD"),
    (TagConfig(name="in1", table="input", address=1, scale=0.5), 100.0, "GOOD"),
    (TagConfig(name="in2", table="input", address=2, type="int16"), -1, "GOOD"),
    (TagConfig(name="bit0", table="input", address=3, type="bool", bit=0), 1.0, "GOOD"),
    (TagConfig(name="bit1", table="input", address=3, type="bool", bit=1), 0.0, "GOOD"),
    (TagConfig(name="bit2", table="input", address=3, type="bool", bit=2), 1.0, "GOOD"),
    (TagConfig(name="bit13", table="input", address=3, type="bool", bit=13), 1.0, "GOOD"),
    (TagConfig(name="bit14", table="input", address=3, type="bool", bit=14), 0.0, "GOOD"),
    (TagConfig(name="bit15", table="input", address=3, type="bool", bit=15), 1.0, "GOOD"),
    (TagConfig(name="ai-4ma", table="input", address=4, type="int16", current_loop=SIEMENS_AI),
     0.0, "GOOD"),
    (TagConfig(name="ai-12ma", table="input", address=5, type="int16", current_loop=SIEMENS_AI),
     50.0, "GOOD"),
    (TagConfig(name="ai-20ma", table="input", address=6, type="int16", current_loop=SIEMENS_AI),
     100.0, "GOOD"),
    (TagConfig(name="ai-break", table="input", address=7, type="int16",
               current_loop=SIEMENS_AI), None, "BAD_RANGE"),
    (TagConfig(name="ai-short", table="input", address=8, type="int16",
               current_loop=SIEMENS_AI), None, "BAD_RANGE"),
    (TagConfig(name="ai-3.8ma", table="input", address=9, type="int16",
               current_loop=SIEMENS_AI), -344 / 27648 * 100.0, "GOOD"),
    (TagConfig(name="ai-ranged", table="input", address=9, type="int16",
               current_loop=SIEMENS_AI, range=(0.0, 100.0)), None, "BAD_RANGE"),
    (TagConfig(name="coil0", table="coil", address=0, type="bool"), 1.0, "GOOD"),
    (TagConfig(name="coil1", table="coil", address=1, type="bool"), 0.0, "GOOD"),
    (TagConfig(name="coil3", table="coil", address=3, type="bool"), 1.0, "GOOD"),
    (TagConfig(name="di0", table="discrete", address=0, type="bool"), 0.0, "GOOD"),
    (TagConfig(name="di1", table="discrete", address=1, type="bool"), 1.0, "GOOD"),
]  # fmt: skip


def sim_device(unit_id: int = 1, *, holding_offset: int = 0) -> SimDevice:
    """A device with the registers above; ``holding_offset`` added to every holding value."""
    holding = [(HOLDING[a] + holding_offset) & 0xFFFF for a in sorted(HOLDING)]
    return SimDevice(
        id=unit_id,
        simdata=(
            [SimData(address=0, values=COILS, datatype=DataType.BITS)],
            [SimData(address=0, values=DISCRETE, datatype=DataType.BITS)],
            [SimData(address=0, values=holding, datatype=DataType.REGISTERS)],
            [SimData(address=0, values=[INPUT[a] for a in sorted(INPUT)],
                     datatype=DataType.REGISTERS)],
        ),
    )  # fmt: skip


def stepping_clock(step_s: float = 10.0) -> Callable[[], float]:
    """An injected monotonic clock that moves ``step_s`` at every reading: every poll of a lost
    device is due for a probe (for tests about something else than the probe schedule)."""
    now = [0.0]

    def clock() -> float:
        now[0] += step_s
        return now[0]

    return clock


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def tcp_server(
    port: int, *devices: SimDevice, framer: FramerType = FramerType.SOCKET
) -> AsyncIterator[ModbusTcpServer]:
    """A pymodbus TCP server; ``framer=FramerType.RTU`` makes it a serial device server
    (RTU frames over TCP)."""
    server = ModbusTcpServer(
        list(devices) or [sim_device()], address=("127.0.0.1", port), framer=framer
    )
    await server.serve_forever(background=True)
    try:
        yield server
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]


@contextlib.asynccontextmanager
async def serial_server(
    path: str, *devices: SimDevice, framer: FramerType = FramerType.RTU
) -> AsyncIterator[ModbusSerialServer]:
    server = ModbusSerialServer(list(devices), port=path, baudrate=115200, framer=framer)
    await server.serve_forever(background=True)
    try:
        yield server
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]


@contextlib.asynccontextmanager
async def silent_peer(port: int) -> AsyncIterator[list[bytes]]:
    """Accepts connections, reads requests (returned list), never answers."""
    received: list[bytes] = []
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(1024):
                received.append(data)

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        yield received
    finally:
        server.close()
        for writer in writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        await server.wait_closed()


@contextlib.contextmanager
def pty_pair(directory: Path) -> Iterator[tuple[str, str]]:
    """Two linked pseudo-terminals (socat), as paths ``(a, b)``; bytes written to one come
    out of the other."""
    socat = shutil.which("socat")
    assert socat, "socat is required for the RTU tests"
    a, b = directory / "ttyA", directory / "ttyB"
    proc = subprocess.Popen(
        [socat, "-d", "-d", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 5.0
        while not (a.exists() and b.exists()):
            assert proc.poll() is None, "socat exited"
            assert time.monotonic() < deadline, "socat did not create the pty pair"
            time.sleep(0.01)
        yield str(a), str(b)
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def same(value: float, expected: float | None) -> bool:
    if expected is None:
        return math.isnan(value)
    return value == expected


@contextlib.asynccontextmanager
async def late_once_proxy(port: int, upstream: int, delay_s: float) -> AsyncIterator[None]:
    """Forwards to ``upstream``; the very first answer (of any connection) comes ``delay_s``
    late, later answers on that connection queue behind it, as on a real slow link."""
    delayed = False
    writers: list[asyncio.StreamWriter] = []
    tasks: set[asyncio.Task[None]] = set()

    async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, slow: bool) -> None:
        nonlocal delayed
        with contextlib.suppress(ConnectionError):
            while data := await src.read(1024):
                if slow and not delayed:
                    delayed = True
                    await asyncio.sleep(delay_s)
                dst.write(data)
                await dst.drain()
        dst.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream)
        writers.extend((writer, up_writer))
        for coro in (pump(reader, up_writer, False), pump(up_reader, writer, True)):
            task = asyncio.create_task(coro)
            tasks.add(task)

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def fault_proxy(
    port: int, upstream: int, *, close_after_replies: int | None = None
) -> AsyncIterator[list[int]]:
    """Forwards TCP to ``upstream``; yields ``[connections accepted]``. With
    ``close_after_replies``, the FIRST connection is closed by the "device" after that many
    replies (a device restarting mid-poll); later connections pass through."""
    accepted = [0]
    writers: list[asyncio.StreamWriter] = []
    tasks: set[asyncio.Task[None]] = set()

    async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, limit: int | None) -> None:
        sent = 0
        with contextlib.suppress(ConnectionError):
            while data := await src.read(4096):
                if limit is not None and sent >= limit:
                    break
                dst.write(data)
                await dst.drain()
                sent += 1
        for w in writers:
            w.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted[0] += 1
        limit = close_after_replies if accepted[0] == 1 else None
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream)
        writers.extend((writer, up_writer))
        for coro in (pump(reader, up_writer, None), pump(up_reader, writer, limit)):
            task = asyncio.create_task(coro)
            tasks.add(task)

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        yield accepted
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        await server.wait_closed()


def open_raw(path: str) -> int:
    """A non-blocking fd on a (socat, already raw) pty path."""
    return os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)


@contextlib.asynccontextmanager
async def serial_relay(
    near: str, far: str, mutate: Callable[[int, bytes], bytes]
) -> AsyncIterator[None]:
    """Relays bytes between two pty paths; replies (far → near) pass through
    ``mutate(reply number, bytes)`` — to corrupt a CRC or add garbage on the line."""
    loop = asyncio.get_running_loop()
    a, b = open_raw(near), open_raw(far)
    replies = [0]

    def forward(src: int, dst: int, is_reply: bool) -> None:
        try:
            data = os.read(src, 4096)
        except BlockingIOError:
            return
        if is_reply:
            data = mutate(replies[0], data)
            replies[0] += 1
        os.write(dst, data)

    loop.add_reader(a, forward, a, b, False)
    loop.add_reader(b, forward, b, a, True)
    try:
        yield
    finally:
        loop.remove_reader(a)
        loop.remove_reader(b)
        os.close(a)
        os.close(b)


Reply = Callable[[int, int, int, bytes], list[bytes]]


@contextlib.asynccontextmanager
async def scripted_tcp_peer(port: int, reply: Reply) -> AsyncIterator[list[int]]:
    """A raw Modbus TCP peer (no pymodbus): every MBAP request ``n`` (0-based, over all
    connections) is answered with the frames ``reply(n, tid, unit, pdu)`` returns, written
    back to back (empty: silence). Yields ``[connections accepted]``."""
    accepted = [0]
    count = [0]
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted[0] += 1
        writers.append(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readexactly(7)
                tid, _pid, length, unit = struct.unpack(">HHHB", head)
                pdu = await reader.readexactly(length - 1)
                n, count[0] = count[0], count[0] + 1
                for frame in reply(n, tid, unit, pdu):
                    writer.write(frame)
                await writer.drain()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        yield accepted
    finally:
        server.close()
        for writer in writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        await server.wait_closed()


def mbap(tid: int, unit: int, pdu: bytes) -> bytes:
    """An MBAP frame, written out by hand (not by the code under test)."""
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


def registers_pdu(fc: int, values: list[int]) -> bytes:
    return bytes([fc, 2 * len(values)]) + b"".join(struct.pack(">H", v) for v in values)


@contextlib.asynccontextmanager
async def gateway_proxy(port: int, upstream: int, silent: set[int]) -> AsyncIterator[list[int]]:
    """A Modbus TCP gateway in front of ``upstream``: requests to a unit in ``silent`` are
    swallowed (that unit is off the line), others forwarded. Yields ``[connections accepted]``;
    ``silent`` may be changed while it runs."""
    accepted = [0]
    writers: list[asyncio.StreamWriter] = []
    tasks: set[asyncio.Task[None]] = set()

    async def back(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await src.read(4096):
                dst.write(data)
                await dst.drain()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted[0] += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream)
        writers.extend((writer, up_writer))
        task = asyncio.create_task(back(up_reader, writer))
        tasks.add(task)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readexactly(7)
                body = await reader.readexactly(struct.unpack(">H", head[4:6])[0] - 1)
                if head[6] not in silent:
                    up_writer.write(head + body)
                    await up_writer.drain()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        yield accepted
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        await server.wait_closed()


class ManualClock:
    """An injected monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def crc16_modbus(data: bytes) -> int:
    """Modbus CRC-16, written out here (not the code under test's)."""
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def rtu(unit: int, pdu: bytes) -> bytes:
    body = bytes([unit]) + pdu
    return body + struct.pack("<H", crc16_modbus(body))


@contextlib.asynccontextmanager
async def scripted_rtu_peer(path: str, reply: Reply) -> AsyncIterator[None]:
    """A raw RTU slave on a pty path (no pymodbus): each 8-byte read request ``n`` is answered
    with the frames ``reply(n, 0, unit, pdu)`` returns."""
    loop = asyncio.get_running_loop()
    fd = open_raw(path)
    buf = bytearray()
    count = [0]

    def readable() -> None:
        try:
            buf.extend(os.read(fd, 4096))
        except BlockingIOError:
            return
        while len(buf) >= 8:
            frame = bytes(buf[:8])
            del buf[:8]
            n, count[0] = count[0], count[0] + 1
            for out in reply(n, 0, frame[0], frame[1:6]):
                os.write(fd, out)

    loop.add_reader(fd, readable)
    try:
        yield
    finally:
        loop.remove_reader(fd)
        os.close(fd)
