"""Alarm outputs end to end: a real agent process polls the tank-farm PLC simulator (a pymodbus
server), a real Mosquitto carries a signed acknowledgement, and the PLC's coils are read with
pymodbus' own client: after a level-2 alarm, after the ack, after the clear, and after the agent
is SIGKILLed — when the fail-safe state must come from the PLC's heartbeat watchdog, not from
the agent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.codec import decode_envelope, decode_event
from agent.commands import sign_command
from central.cmd_sign import build_payload, keygen, load_private_key, publish_command
from provisioning.localbroker import free_port
from provisioning.simulator import OUTPUT_COILS, tank_farm_config
from tests.support.mosquitto import Broker, Subscriber
from tests.support.plc import PlcThread, coils

pytestmark = pytest.mark.integration

KID = "platform-test"
ROOT = "safeedge/v1/S1/G1"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "broker")
    b.start()
    yield b
    b.kill()


def until(what: str, check: Callable[[], bool], timeout_s: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if check():
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout_s} s")


def test_outputs_follow_level_2_ack_clear_and_fall_to_fail_safe_when_the_agent_dies(
    tmp_path: Path, broker: Broker
) -> None:
    beacon, siren, relay = (OUTPUT_COILS[n] for n in ("beacon", "siren", "shutdown_request"))
    key_path, public = keygen(KID, tmp_path / "keys")
    plc = PlcThread(free_port(), time_scale=3.0, leak_start_s=12.0, seed=5,
                    heartbeat_timeout_s=1.5)  # fmt: skip
    config = tmp_path / "agent.toml"
    text = tank_farm_config(modbus_host="127.0.0.1", modbus_port=plc.sim.port,
                            mqtt_host=broker.host, mqtt_port=broker.port,
                            data_dir=str(tmp_path / "data"), site="S1", gateway="G1",
                            outputs=True, governance=False)  # fmt: skip
    config.write_text(text + f'\n[commands]\ntrusted_keys = {{ "{KID}" = "{public}" }}\n')
    env = {**os.environ, "NUMBA_CACHE_DIR": str(REPO / ".cache/numba")}
    log = tmp_path / "agent.log"
    with Subscriber(broker, f"{ROOT}/event") as events, log.open("wb") as log_file:
        args = [sys.executable, "-m", "agent", "run", "--config", str(config)]
        agent = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log_file, env=env)
        try:
            # normal: the fail-safe beacon is energised, siren and relay off
            until("the agent energises the beacon", lambda: coils(plc.sim.port)[beacon], 60)
            assert coils(plc.sim.port)[siren:] == [False, False]
            until("level 2 sounds the siren", lambda: coils(plc.sim.port)[siren], 40)
            assert coils(plc.sim.port) == [False, True, True]  # beacon de-energised = alarm
            payload = build_payload({"gw": "G1", "cmd": "ack_alarm",
                                     "args": {"tag": "GT-102", "alarm": "high"}})  # fmt: skip
            answer = publish_command(host=broker.host, port=broker.port, root=ROOT,
                                     message=sign_command(load_private_key(key_path), KID,
                                                          payload), wait_s=5)  # fmt: skip
            assert answer is not None and b'"ok"' in answer, answer
            until("the ack silences the siren", lambda: not coils(plc.sim.port)[siren], 3)
            assert coils(plc.sim.port)[beacon] is False  # still in alarm: the beacon stays
            until("the clear restores normal", lambda: coils(plc.sim.port) == [True, False, False],
                  30)  # fmt: skip
            assert not plc.sim.failsafe
            agent.send_signal(signal.SIGKILL)
            agent.wait(10)
            took = until("the PLC's watchdog de-energises the beacon",
                         lambda: not coils(plc.sim.port)[beacon], 5)  # fmt: skip
            assert plc.sim.failsafe and took <= 1.5 + 1.0
            written = [decode_event(decode_envelope(m.payload).body) for m in events.messages]
            outs = {(e["output"], e["alarm"]) for e in written if e["kind"] == "output_written"}
            assert {("siren", True), ("siren", False), ("beacon", True)} <= outs
            assert relay == 2
        finally:
            if agent.poll() is None:
                agent.kill()
            agent.wait(10)
            plc.close()
    err = log.read_text()
    assert "Traceback" not in err, err[-3000:]
