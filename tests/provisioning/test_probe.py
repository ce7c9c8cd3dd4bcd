"""``safeedge probe``: every tag read once through the real driver from a real pymodbus unit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.cli import main
from tests.drivers.peers import free_port, sim_device
from tests.provisioning.background import in_background, tcp_peer


def write_config(tmp_path: Path, port: int) -> Path:
    # peers.sim_device: holding 34 = 500, holding 1 = 0xFFFE, input 7 = 3.5 mA on a Siemens card
    text = f"""
[gateway]
site = "S1"
id = "G1"

[[devices]]
driver = "modbus_tcp"
name = "plc"
host = "127.0.0.1"
port = {port}
timeout_s = 1.0

  [[devices.tags]]
  name = "GT-101"
  address = 34
  scale = 0.1
  offset = -10.0
  unit = "%LEL"

  [[devices.tags]]
  name = "GT-102"
  address = 1
  type = "int16"
  unit = "%LEL"

  [[devices.tags]]
  name = "AI-7"
  table = "input"
  address = 7
  type = "int16"
  unit = "%LEL"
  current_loop = {{ raw_span = [0, 27648], span = [0, 100] }}

  [[devices.tags]]
  name = "GT-200"
  address = 200
  unit = "%LEL"

[[rules]]
match = "GT-*"
template = "combustible-gas-lel"
"""
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_probe_shows_raw_registers_decoded_values_quality_reasons_limits_and_plausibility(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    config = write_config(tmp_path, port)
    with in_background(lambda: tcp_peer(port, sim_device())):
        code = main(["probe", "--config", str(config), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1 and doc["ok"] is False
    rows = {t["tag"]: t for t in doc["tags"]}
    gt = rows["GT-101"]
    assert (gt["raw"], gt["value"], gt["quality"], gt["unit"]) == ("0x01F4", 40.0, "good", "%LEL")
    assert gt["address"] == "holding 34"
    assert gt["limits"] == {"high": 25.0, "high_high": 50.0}
    assert gt["plausible"] is True
    neg = rows["GT-102"]
    assert (neg["raw"], neg["value"], neg["plausible"]) == ("0xFFFE", -2.0, False)
    ai = rows["AI-7"]
    assert ai["quality"] == "bad_range" and "wire break" in ai["reason"]
    assert ai["raw"] == "0xFCA0" and ai["limits"] == {}
    far = rows["GT-200"]
    assert far["quality"] == "bad_device" and "exception response 2" in far["reason"]
    [plc] = doc["devices"]
    assert plc["answered"] is True and len(plc["refused"]) == 1
    # holding 1, 34 and 200 are further apart than max_gap (10): one request each, + input 7
    assert (doc["requests"], doc["tag_count"]) == (4, 4)


def test_probe_of_one_device_that_does_not_answer_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, free_port())
    code = main(["probe", "--config", str(config), "--device", "plc", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1
    [plc] = doc["devices"]
    assert plc["answered"] is False and plc["error"]
    assert {t["quality"] for t in doc["tags"]} == {"bad_comm"}
    assert main(["probe", "--config", str(config), "--device", "nope"]) == 2


def test_probe_terminal_view_lists_every_tag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    config = write_config(tmp_path, port)
    with in_background(lambda: tcp_peer(port, sim_device())):
        main(["probe", "--config", str(config)])
    out = capsys.readouterr().out
    for name in ("GT-101", "GT-102", "AI-7", "GT-200", "0x01F4", "4 requests for 4 tags"):
        assert name in out


def test_probe_reads_an_rtu_unit_and_a_serial_line_gas_controller(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import os
    import threading
    import time
    import tty

    from drivers.lineproto import checksum_text
    from tests.provisioning.scan_peers import line_at, plain_device

    master, slave = os.openpty()
    tty.setraw(slave)
    stop = threading.Event()

    def push() -> None:  # the gas controller pushes one NMEA-style line per channel
        while not stop.is_set():
            for ch, value in ((1, "12.5"), (2, "0.0")):
                body = f"GAS,{ch},{value},LEL".encode()
                os.write(master, b"$" + body + b"*" + checksum_text("xor", body) + b"\r\n")
            time.sleep(0.1)

    writer = threading.Thread(target=push, daemon=True)
    with in_background(lambda: line_at(9600, plain_device(3, [0, 215, 0, 0]))) as line:
        text = f"""
[gateway]
site = "S1"
id = "G1"
[[serial_ports]]
name = "rs485"
path = "{line.path}"
baudrate = 9600
[[serial_ports]]
name = "rs232"
path = "{os.ttyname(slave)}"
[[devices]]
driver = "modbus_rtu"
name = "o2"
serial_port = "rs485"
unit_id = 3
timeout_s = 0.5
  [[devices.tags]]
  name = "O2-1"
  address = 1
  scale = 0.1
  unit = "%VOL"
[[devices]]
driver = "serial_line"
name = "gas"
serial_port = "rs232"
framing = "start_end"
start = "$"
end = "\\r\\n"
checksum = "xor"
key_field = 1
timeout_s = 0.5
  [[devices.tags]]
  name = "CH1"
  key = "1"
  field = 2
  unit = "%LEL"
  [[devices.tags]]
  name = "CH2"
  key = "2"
  field = 2
  unit = "%LEL"
[[rules]]
tags = ["O2-1"]
template = "oxygen"
"""
        config = tmp_path / "agent.toml"
        config.write_text(text)
        writer.start()
        try:
            code = main(["probe", "--config", str(config), "--json"])
        finally:
            stop.set()
            writer.join(2)
            os.close(master)
            os.close(slave)
    doc = json.loads(capsys.readouterr().out)
    rows = {t["tag"]: t for t in doc["tags"]}
    assert (rows["O2-1"]["raw"], rows["O2-1"]["value"]) == ("0x00D7", 21.5)
    assert rows["O2-1"]["limits"] == {"low": 19.5, "high": 23.5}
    assert rows["O2-1"]["plausible"] is True
    assert (rows["CH1"]["value"], rows["CH2"]["value"]) == (12.5, 0.0)
    assert rows["CH1"]["address"] == "field 2 key 1"
    assert code == 0, doc
