"""``safeedge scan``: real pymodbus units over TCP and over ptys at their own baud rates."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agent.cli import main
from tests.drivers.peers import free_port
from tests.provisioning.background import in_background, tcp_peer
from tests.provisioning.scan_peers import (
    IDENTITY,
    fc43_only_device,
    gateway_catch_all,
    holes_device,
    line_at,
    plain_device,
)

REPO = Path(__file__).parents[2]


def scan(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, object]]:
    code = main(["scan", *args, "--json"])
    return code, json.loads(capsys.readouterr().out)


def units(doc: dict[str, object]) -> dict[int, dict[str, object]]:
    return {int(u["unit"]): u for u in doc["units"]}  # type: ignore[attr-defined]


def test_tcp_scan_finds_the_units_their_identity_and_the_holes_in_their_registers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = free_port()
    peers = (holes_device(1), fc43_only_device(3), gateway_catch_all())
    functions: set[int] = set()

    def trace(sending: bool, pdu: Any) -> Any:
        if not sending:
            functions.add(int(pdu.function_code))
        return pdu

    with in_background(lambda: tcp_peer(port, *peers, identity=IDENTITY, trace_pdu=trace)):
        code, doc = scan(capsys, "tcp", f"127.0.0.1:{port}", "--units", "1-5",
                         "--addresses", "0-999", "--rate", "0")  # fmt: skip
    assert code == 0
    found = units(doc)
    assert sorted(found) == [1, 3]  # 2, 4, 5: the gateway says nobody is there (exception 11)
    one = found[1]
    assert one["identification"] == {"vendor": "Hanwei", "product_code": "BS01-II",
                                     "revision": "2.1"}  # fmt: skip
    tables = {t["table"]: t for t in one["tables"]}  # type: ignore[attr-defined]
    assert tables["holding"]["ranges"] == [[0, 9], [20, 29], [100, 149]]
    assert tables["input"]["ranges"] == [[0, 4]]
    assert tables["coil"]["ranges"] == [[0, 15]] and tables["discrete"]["ranges"] == [[0, 15]]
    # bounded (module docstring): 8 blocks + 3 range ends x log2(125) + holes of 10, 70 and
    # 850 addresses at log2(hole) + hole/16 each: about 125 requests for 1000 addresses
    assert tables["holding"]["requests"] <= 130, tables["holding"]["requests"]
    assert functions == {0x01, 0x02, 0x03, 0x04, 0x2B}  # reads and identification only
    three = found[3]
    assert three["reply"] == "exception 1 (illegal function)"
    assert three["identification"]["vendor"] == "Hanwei"  # type: ignore[index]
    assert not any(t["supported"] for t in three["tables"])  # type: ignore[attr-defined]


def test_every_hole_is_exact_at_resolution_one() -> None:
    import asyncio

    from drivers.config import ModbusTcpDeviceConfig
    from provisioning.scan import Pacer, Scanner, ScanReport
    from provisioning.scan_io import tcp_link

    port = free_port()
    with in_background(lambda: tcp_peer(port, holes_device(1))):

        async def go() -> list[tuple[int, int]]:
            link = tcp_link(ModbusTcpDeviceConfig(name="t", host="127.0.0.1", port=port))
            link.enter()
            try:
                s = Scanner(link=link, name="t", timeout_s=1.0, pacer=Pacer(0),
                            report=ScanReport("t"), resolution=1)  # fmt: skip
                return (await s.ranges(1, "holding", 5, 120)).ranges
            finally:
                link.leave()

        assert asyncio.run(go()) == [(5, 9), (20, 29), (100, 120)]


def test_tcp_scan_of_an_endpoint_nobody_listens_on_fails_with_one_clear_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, doc = scan(capsys, "tcp", f"127.0.0.1:{free_port()}", "--timeout", "0.5")
    assert code == 1
    assert "connect" in str(doc["stopped"]) and doc["units"] == []


def test_the_rate_bounds_the_requests_per_second(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    with in_background(lambda: tcp_peer(port, plain_device(1), gateway_catch_all())):
        start = time.monotonic()
        code, doc = scan(capsys, "tcp", f"127.0.0.1:{port}", "--units", "1-10", "--tables",
                         "holding", "--addresses", "0-9", "--rate", "20",
                         "--no-identify")  # fmt: skip
        elapsed = time.monotonic() - start
    assert code == 0 and sorted(units(doc)) == [1]
    requests = int(doc["requests"])  # type: ignore[call-overload]
    assert requests >= 11
    assert elapsed >= (requests - 1) / 20 * 0.95


def test_serial_sweep_finds_each_unit_at_its_own_baud_rate(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["--units", "1-4", "--timeout", "0.15", "--rate", "0", "--silence", "0"]
    with in_background(lambda: line_at(19200, plain_device(1), plain_device(2))) as line:
        code, doc = scan(capsys, "serial", line.path, *args)
    assert code == 0
    found = units(doc)
    assert sorted(found) == [1, 2]
    assert {u["settings"] for u in found.values()} == {"19200 8N1"}
    combos = {c["settings"]: c for c in doc["combinations"]}  # type: ignore[attr-defined]
    assert list(combos) == ["9600 8N1", "9600 8E1", "19200 8N1", "19200 8E1", "4800 8N1",
                            "4800 8E1"]  # fmt: skip
    assert combos["9600 8N1"]["answered"] == [] and combos["19200 8N1"]["answered"] == [1, 2]
    # 1 and 2 are not asked again at 19200 8E1; a pty refuses parity after a first open
    # (the kernel clears PARENB: see scan_peers), which the sweep reports and survives
    assert combos["19200 8E1"]["tried"] in (0, 2)
    assert all(c["error"] == "" or "refuses" in str(c["error"]) for c in combos.values())

    with in_background(lambda: line_at(4800, plain_device(3), fc43_only_device(4))) as line:
        code, doc = scan(capsys, "serial", line.path, "--bauds", "9600,4800", *args)
    found = units(doc)
    assert sorted(found) == [3, 4] and found[4]["reply"] == "exception 1 (illegal function)"
    assert line.functions <= {0x03, 0x2B}  # holding reads and identification: never a write
    assert {u["settings"] for u in found.values()} == {"4800 8N1"}


def test_serial_sweep_stops_a_combination_after_the_silence_limit(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with in_background(lambda: line_at(9600, plain_device(1))) as line:
        code, doc = scan(capsys, "serial", line.path, "--bauds", "19200", "--parities", "N",
                         "--units", "1-32", "--timeout", "0.1", "--silence", "3",
                         "--rate", "0")  # fmt: skip
    assert code == 1 and doc["units"] == []
    [combo] = doc["combinations"]  # type: ignore[misc]
    assert combo["tried"] == 3 and combo["stopped_early"] is True


def test_ctrl_c_stops_the_sweep_cleanly_and_reports_what_was_found() -> None:
    with in_background(lambda: line_at(9600, plain_device(1))) as line:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "scan", "serial", line.path, "--units", "1-32",
             "--silence", "0", "--timeout", "0.2", "--rate", "0", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while line.requests < 2 and time.monotonic() < deadline:  # unit 1 answered, identified
            time.sleep(0.05)
        time.sleep(0.3)  # now in the silent ids, 0.2 s each
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 130, err
    doc = json.loads(out)
    assert doc["stopped"] == "interrupted"
    assert [u["unit"] for u in doc["units"]] == [1]
    assert "Traceback" not in err


def test_on_a_terminal_the_sweep_shows_a_progress_bar_with_what_it_found_and_the_time_left() -> (
    None
):
    with in_background(lambda: line_at(19200, plain_device(1))) as line:
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "TTY_INTERACTIVE": "1",
            "TTY_COMPATIBLE": "1",
            "COLUMNS": "120",
        }  # rich: behave as on a terminal
        done = subprocess.run(
            [sys.executable, "-m", "agent", "scan", "serial", line.path, "--units", "1-3",
             "--bauds", "9600,19200", "--parities", "N", "--timeout", "0.1", "--rate", "0"],
            capture_output=True, text=True, env=env, cwd=REPO, timeout=60,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "19200 8N1" in done.stderr and "found 1" in done.stderr and "6/6" in done.stderr
    assert "1 unit answered; 6 unit ids tried over 2 settings" in done.stdout


def test_a_serial_port_that_cannot_be_opened_ends_the_sweep_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, doc = scan(capsys, "serial", str(tmp_path / "ttyNOPE"), "--units", "1-3")
    assert code == 1 and doc["units"] == [] and doc["requests"] == 0
    assert "ttyNOPE" in str(doc["stopped"])
