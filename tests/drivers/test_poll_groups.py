"""Poll groups: tags of one device read at their own periods, over the device's one link."""

from __future__ import annotations

import asyncio

import pytest

from drivers import DriverConfigError, Quality, build_devices, poll_group_problems
from drivers.config import ModbusTcpDeviceConfig, PollGroupConfig, TagConfig
from tests.drivers.peers import EXPECTED, free_port, same, sim_device, tcp_server


def _config(port: int = 502, **extra: object) -> ModbusTcpDeviceConfig:
    tags = (
        TagConfig(name="fast-a", address=0, poll_group="fast"),
        TagConfig(name="slow-b", address=1, type="int16", poll_group="slow"),
        TagConfig(name="plain-c", address=34, scale=0.1, offset=-10.0),
    )
    groups = (
        PollGroupConfig(name="fast", poll_interval_s=0.2),
        PollGroupConfig(name="slow", poll_interval_s=10.0),
    )
    fields: dict[str, object] = {
        "name": "plc",
        "host": "127.0.0.1",
        "port": port,
        "timeout_s": 0.5,
        "poll_groups": groups,
        "tags": tags,
    }
    fields.update(extra)
    return ModbusTcpDeviceConfig(**fields)  # type: ignore[arg-type]


INDEX = {"fast-a": 0, "slow-b": 1, "plain-c": 2}


def test_each_poll_group_becomes_a_device_with_its_own_period_on_the_shared_bus() -> None:
    devices = build_devices(_config(), tag_index=INDEX, serial_ports={})
    by_name = {d.name: d for d in devices}
    assert sorted(by_name) == ["plc", "plc.fast", "plc.slow"]
    assert by_name["plc"].poll_interval_s == 1.0
    assert by_name["plc.fast"].poll_interval_s == 0.2
    assert by_name["plc.slow"].poll_interval_s == 10.0
    assert len({d.bus for d in devices}) == 1  # one connection, one owner task
    # a dead device may only cost its own period: the fast group's timeout is cut to 0.2 s
    assert by_name["plc.fast"].timeout_s == 0.2  # type: ignore[attr-defined]
    assert by_name["plc.slow"].timeout_s == 0.5  # type: ignore[attr-defined]


def test_a_device_without_poll_groups_stays_one_device() -> None:
    cfg = ModbusTcpDeviceConfig(
        name="plc", host="127.0.0.1", tags=(TagConfig(name="a", address=0),)
    )
    [device] = build_devices(cfg, tag_index={"a": 0}, serial_ports={})
    assert device.name == "plc"


def test_a_tag_naming_an_unknown_group_is_reported_and_refused() -> None:
    cfg = _config(
        tags=(TagConfig(name="fast-a", address=0, poll_group="fats"),),
        poll_groups=(
            PollGroupConfig(name="fast", poll_interval_s=0.2),
            PollGroupConfig(name="fast", poll_interval_s=0.5),
        ),
    )
    problems = poll_group_problems(cfg)
    assert [p[0] for p in problems] == ["poll_groups[1].name", 'tags[0] "fast-a".poll_group']
    assert 'unknown poll group "fats"' in problems[1][1]
    assert '"fast"' in problems[1][2]
    with pytest.raises(DriverConfigError, match="plc"):
        build_devices(cfg, tag_index={"fast-a": 0}, serial_ports={})


@pytest.mark.integration
def test_every_group_reads_only_its_own_tags_from_a_real_plc() -> None:
    expected = {t.name: v for t, v, _ in EXPECTED}

    async def scenario() -> dict[str, list[tuple[int, float]]]:
        port = free_port()
        async with tcp_server(port, sim_device()):
            devices = build_devices(_config(port), tag_index=INDEX, serial_ports={})
            out: dict[str, list[tuple[int, float]]] = {}
            for device in devices:
                async with device:
                    batch = await device.poll()
                assert (batch.quality == Quality.GOOD).all()
                out[device.name] = list(zip(batch.tag.tolist(), batch.value.tolist(), strict=True))
            return out

    read = asyncio.run(scenario())
    assert [t for t, _ in read["plc.fast"]] == [INDEX["fast-a"]]
    assert [t for t, _ in read["plc.slow"]] == [INDEX["slow-b"]]
    assert [t for t, _ in read["plc"]] == [INDEX["plain-c"]]
    assert same(read["plc.fast"][0][1], expected["u16"])
    assert same(read["plc.slow"][0][1], expected["i16"])
    assert same(read["plc"][0][1], expected["scaled"])
