"""Which alarms drive an output, and the writer loop against a real pymodbus server (its coils
read back with pymodbus' own client)."""

from __future__ import annotations

import asyncio

import pytest
from pymodbus.client import AsyncModbusTcpClient

from agent.alarm_outputs import (
    AlarmOutputConfig,
    AlarmOutputs,
    AlarmStates,
    OutputPolicy,
    OutputWhen,
)
from agent.config.checks import selection_problems
from drivers import WriteResult, build_output_writers
from drivers.config import ModbusTcpDeviceConfig, TagConfig
from rules.events import AlarmEvent
from tests.drivers.peers import ManualClock, free_port, tcp_server

NAMES = ["GT-101", "GT-102", "TT-101"]
DEVICE_TAGS = {"plc": NAMES}


def ev(tag: int, event: str, level: int, alarm: str = "high") -> AlarmEvent:
    return AlarmEvent(0, tag, alarm, event, level, None)  # type: ignore[arg-type]


def policy(**kw: object) -> OutputPolicy:
    return OutputPolicy(OutputWhen(**kw), tag_names=NAMES, device_tags=DEVICE_TAGS)  # type: ignore[arg-type]


def test_an_output_follows_level_kind_selection_and_acknowledgement() -> None:
    states = AlarmStates()
    siren = policy(match="GT-*", min_level=2, unacknowledged=True)
    beacon = policy(tags=("GT-102",), min_level=1)
    temp = policy(devices=("plc",), kinds=("low",))
    seen = []
    for events in ([ev(1, "raise", 1)], [ev(1, "escalate", 2)], [ev(1, "ack", 2)],
                   [ev(1, "deescalate", 1)], [ev(1, "clear", 0)], [ev(2, "raise", 2)]):  # fmt: skip
        states.apply(events)
        seen.append((siren.in_alarm(states), beacon.in_alarm(states), temp.in_alarm(states)))
    assert seen == [
        (False, True, False),  # level 1: beacon only
        (True, True, False),  # level 2: siren too
        (False, True, False),  # acknowledged: the siren stops, the beacon stays
        (False, True, False),
        (False, False, False),  # cleared
        (False, False, False),  # TT-101 high: not a gas tag, not a low alarm
    ]


def test_a_latched_alarm_that_returned_drives_no_output_but_is_kept_until_acknowledged() -> None:
    states = AlarmStates()
    unacked = policy(unacknowledged=True)  # level >= 1 still required: a return is level 0
    any_level = policy()
    states.apply([ev(0, "raise", 1), ev(0, "return", 0)])
    assert (unacked.in_alarm(states), any_level.in_alarm(states)) == (False, False)
    assert states.alarms  # still known: the acknowledgement will clear it
    states.apply([ev(0, "clear", 0)])
    assert not states.alarms


def test_selections_that_name_nothing_are_reported() -> None:
    when = OutputWhen(tags=("nope",), match="XX-*", devices=("d",))
    outs = [AlarmOutputConfig(name="s", device="plc", address=1, when=when)]
    keys = [k for k, _, _ in selection_problems(outs, tag_names=NAMES, device_tags=DEVICE_TAGS)]
    assert keys == ['outputs[0] "s".when.tags', 'outputs[0] "s".when.match',
                    'outputs[0] "s".when.devices']  # fmt: skip


@pytest.mark.integration
def test_the_loop_writes_on_change_reports_every_write_and_reads_back_from_the_server() -> None:
    async def main() -> tuple[list[tuple[str, bool, int]], list[bool]]:
        port, clock = free_port(), ManualClock()
        dev = ModbusTcpDeviceConfig(name="plc", host="127.0.0.1", port=port, timeout_s=0.5,
                                    tags=(TagConfig(name="GT-101", address=0),))  # fmt: skip
        cfg = AlarmOutputConfig(name="siren", device="plc", address=1,
                                when=OutputWhen(min_level=2))  # fmt: skip
        (writer,) = build_output_writers([cfg], devices=[dev], serial_ports={}, monotonic=clock)
        states = AlarmStates()
        reports: list[tuple[str, bool, int]] = []

        def report(kind: str, r: WriteResult) -> None:
            reports.append((kind, r.alarm, r.value))

        loop = AlarmOutputs(writers=[writer], policies=[policy(min_level=2)], states=states,
                            report=report)  # fmt: skip
        coils = []
        async with tcp_server(port), writer:
            client = AsyncModbusTcpClient("127.0.0.1", port=port)
            await client.connect()
            for events in ([], [ev(0, "raise", 2)], [], [ev(0, "clear", 0)]):
                states.apply(events)
                await loop.step()
                rr = await client.read_coils(1, count=1, device_id=1)
                coils.append(bool(rr.bits[0]))
            client.close()
        return reports, coils

    reports, coils = asyncio.run(main())
    assert coils == [False, True, True, False]
    assert reports == [("output_written", False, 0), ("output_written", True, 1),
                       ("output_written", False, 0)]  # fmt: skip
