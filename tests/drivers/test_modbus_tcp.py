"""ModbusDevice over TCP against real peers: a pymodbus server, a silent peer, a closed port."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import numpy as np
import pytest

from drivers import (
    DriverConfigError,
    ModbusDevice,
    ProbeResult,
    Quality,
    SampleBatch,
    build_device,
)
from drivers.config import ModbusTcpDeviceConfig, TagConfig
from tests.drivers.peers import (
    EXPECTED,
    free_port,
    late_once_proxy,
    same,
    silent_peer,
    sim_device,
    stepping_clock,
    tcp_server,
)

pytestmark = pytest.mark.integration

TIMEOUT_S = 0.3


def make_device(
    port: int,
    tags: Sequence[TagConfig],
    *,
    timeout_s: float = TIMEOUT_S,
    clock_ms: int | None = None,
) -> ModbusDevice:
    cfg = ModbusTcpDeviceConfig(
        name="plc", host="127.0.0.1", port=port, timeout_s=timeout_s, tags=tuple(tags)
    )
    # tag indices deliberately not 0..n-1, to prove the batch carries the agent's indices
    index = {t.name: 100 + 3 * i for i, t in enumerate(tags)}
    kw = {} if clock_ms is None else {"clock_ms": lambda: clock_ms}
    return build_device(cfg, tag_index=index, serial_ports={}, monotonic=stepping_clock(), **kw)


def qualities(batch: SampleBatch) -> list[str]:
    return [Quality(int(q)).name for q in batch.quality]


def assert_batch_invariants(batch: SampleBatch) -> None:
    good = batch.quality == Quality.GOOD
    assert np.isnan(batch.value[~good]).all()
    assert not np.isnan(batch.value[good]).any()


def test_every_type_and_word_order_reads_as_its_hand_encoded_value() -> None:
    tags = [t for t, _, _ in EXPECTED]

    async def main() -> tuple[SampleBatch, ModbusDevice]:
        port = free_port()
        async with tcp_server(port), make_device(port, tags) as device:
            before = time.time_ns() // 1_000_000
            batch = await device.poll()
            after = time.time_ns() // 1_000_000
            assert (batch.ts_ms >= before).all()
            assert (batch.ts_ms <= after).all()
            return batch, device

    batch, device = asyncio.run(main())
    assert device.online
    assert len(device.requests) == 4  # holding, input, coil, discrete: one block each
    assert list(batch.tag) == [100 + 3 * i for i in range(len(tags))]
    for i, (tag, value, quality) in enumerate(EXPECTED):
        assert Quality(int(batch.quality[i])).name == quality, tag.name
        assert same(float(batch.value[i]), value), (tag.name, batch.value[i], value)
    assert_batch_invariants(batch)


def test_exception_response_marks_only_that_requests_tags_bad_device() -> None:
    tags = [
        TagConfig(name="ok", address=0),
        TagConfig(name="missing", address=500),  # the server has no register 500
        TagConfig(name="in", table="input", address=1),
    ]

    async def main() -> tuple[SampleBatch, bool]:
        port = free_port()
        async with tcp_server(port), make_device(port, tags) as device:
            return await device.poll(), device.online

    batch, online = asyncio.run(main())
    assert qualities(batch) == ["GOOD", "BAD_DEVICE", "GOOD"]
    assert list(batch.value[[0, 2]]) == [0x1234, 200]
    assert online  # the device answered
    assert_batch_invariants(batch)


def test_probe_reports_each_request_with_its_error_and_round_trip() -> None:
    tags = [TagConfig(name="ok", address=0), TagConfig(name="missing", address=500)]

    async def main() -> ProbeResult:
        port = free_port()
        async with tcp_server(port), make_device(port, tags) as device:
            return await device.probe()

    result = asyncio.run(main())
    assert result.connected
    assert not result.ok
    ok, missing = result.reads
    assert (ok.ok, ok.tags, ok.address, ok.count) == (True, ("ok",), 0, 1)
    assert 0 < ok.rtt_ms < 1000
    assert not missing.ok
    assert "exception response 2" in missing.error


def test_probe_of_an_unreachable_device_says_so_without_raising() -> None:
    async def main() -> ProbeResult:
        async with make_device(free_port(), [TagConfig(name="a", address=0)]) as device:
            return await device.probe()

    result = asyncio.run(main())
    assert not result.connected
    assert result.error
    assert [r.ok for r in result.reads] == [False]


def test_closed_port_gives_bad_comm_for_every_tag_and_marks_the_device_offline() -> None:
    tags = [TagConfig(name="a", address=0), TagConfig(name="b", table="coil", address=0,
                                                      type="bool")]  # fmt: skip

    async def main() -> tuple[SampleBatch, bool, float]:
        async with make_device(free_port(), tags, clock_ms=1234) as device:
            start = time.monotonic()
            batch = await device.poll()
            return batch, device.online, time.monotonic() - start

    batch, online, elapsed = asyncio.run(main())
    assert qualities(batch) == ["BAD_COMM", "BAD_COMM"]
    assert np.isnan(batch.value).all()
    assert list(batch.ts_ms) == [1234, 1234]
    assert not online
    assert elapsed < TIMEOUT_S + 0.5


def test_silent_peer_gives_bad_comm_within_the_timeout() -> None:
    tags = [TagConfig(name="a", address=0), TagConfig(name="b", table="input", address=0)]

    async def main() -> tuple[SampleBatch, bool, float, int]:
        port = free_port()
        async with silent_peer(port) as received, make_device(port, tags) as device:
            start = time.monotonic()
            batch = await device.poll()
            elapsed = time.monotonic() - start
            return batch, device.online, elapsed, len(received)

    batch, online, elapsed, requests_seen = asyncio.run(main())
    assert qualities(batch) == ["BAD_COMM", "BAD_COMM"]
    assert not online
    assert requests_seen >= 1  # the request really went out
    # one timeout, not one per request (the second request is skipped)
    assert TIMEOUT_S * 0.9 <= elapsed < TIMEOUT_S + 0.4


def test_device_that_comes_back_reads_good_and_is_online_again() -> None:
    tags = [TagConfig(name="a", address=0)]

    async def main() -> list[tuple[str, bool]]:
        port = free_port()
        seen: list[tuple[str, bool]] = []
        async with make_device(port, tags) as device:
            # down before the first poll: entering did not fail
            seen.append((qualities(await device.poll())[0], device.online))
            async with tcp_server(port):
                seen.append((qualities(await device.poll())[0], device.online))
            # the server went away under an open connection
            seen.append((qualities(await device.poll())[0], device.online))
            async with tcp_server(port):
                seen.append((qualities(await device.poll())[0], device.online))
        return seen

    assert asyncio.run(main()) == [
        ("BAD_COMM", False),
        ("GOOD", True),
        ("BAD_COMM", False),
        ("GOOD", True),
    ]


def test_values_follow_the_server_between_polls_after_a_silent_phase() -> None:
    """After a timeout a late reply is never taken as data (it is discarded by transaction
    id; the connection to the silent peer is replaced when the server comes back)."""
    tags = [TagConfig(name="a", address=0)]

    async def main() -> list[str]:
        port = free_port()
        out = []
        async with make_device(port, tags) as device:
            async with silent_peer(port):
                out += qualities(await device.poll())
            async with tcp_server(port, sim_device(holding_offset=1)):
                batch = await device.poll()
                out += qualities(batch)
                assert batch.value[0] == 0x1235
        return out

    assert asyncio.run(main()) == ["BAD_COMM", "GOOD"]


def test_a_late_answer_is_not_taken_for_the_next_polls_answer() -> None:
    """The first answer arrives after the timeout; the next poll must still read GOOD data:
    the late reply is discarded by its transaction id (and counted), on the same connection."""
    tags = [TagConfig(name="a", address=0)]

    async def main() -> list[str]:
        upstream, port = free_port(), free_port()
        out = []
        async with (
            tcp_server(upstream),
            late_once_proxy(port, upstream, TIMEOUT_S + 0.5),
            make_device(port, tags) as device,
        ):
            out += qualities(await device.poll())
            await asyncio.sleep(0.6)  # the late reply arrives between polls, on the same socket
            batch = await device.poll()
            out += qualities(batch)
            assert batch.value[0] == 0x1234
            assert device.link.counters["late"] == 1
            assert device.link.connects == 1  # the timeout did not close the connection
        return out

    assert asyncio.run(main()) == ["BAD_COMM", "GOOD"]


def test_building_a_device_with_a_tag_missing_from_the_tag_index_is_a_config_error() -> None:
    cfg = ModbusTcpDeviceConfig(name="plc", host="h", tags=(TagConfig(name="a", address=0),))
    with pytest.raises(DriverConfigError, match="tag table"):
        build_device(cfg, tag_index={}, serial_ports={})


def test_building_a_device_does_no_io() -> None:
    # an unresolvable host would fail at once if building tried to connect
    cfg = ModbusTcpDeviceConfig(
        name="plc", host="no-such-host.invalid", tags=(TagConfig(name="a", address=0),)
    )
    device = build_device(cfg, tag_index={"a": 0}, serial_ports={})
    assert (device.name, device.poll_interval_s, device.online) == ("plc", 1.0, False)
