"""Log lines cannot be forged: every value is escaped centrally in kv() and by the formatters."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.logs import escape, kv, setup_logging

FORGED = 'x\n2026-01-01 00:00:00,000 CRITICAL FAKE\x1b[2J\r\u2028\u202e"= \\'


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """A stream the tests' own setup_logging writes to (pytest swaps sys.stderr per phase)."""
    buf = io.StringIO()
    try:
        yield buf
    finally:
        setup_logging("INFO")


def _setup(buf: io.StringIO, fmt: str) -> None:
    old = sys.stderr
    sys.stderr = buf
    try:
        setup_logging("INFO", fmt)  # type: ignore[arg-type]
    finally:
        sys.stderr = old


def test_a_forged_command_id_stays_on_one_line_without_terminal_escapes() -> None:
    line = kv("command_rejected", id=FORGED, detail="ok")
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert "\u2028" not in line and "\u202e" not in line
    assert "\\x0a2026-01-01" in line and "\\x1b[2J" in line and "\\u2028" in line
    assert line.endswith(" detail=ok")


def test_a_hostile_field_name_is_escaped_too() -> None:
    assert "\n" not in kv("e", **{"a\nb": 1})


def test_escaping_is_unambiguous_a_literal_backslash_x_is_doubled() -> None:
    assert escape("\\x0a") == "\\\\x0a"
    assert escape("\n") == "\\x0a"


@settings(max_examples=300, deadline=None)
@given(st.text(), st.text())
def test_any_text_gives_one_printable_line(key: str, value: str) -> None:
    line = kv("event", **{key or "k": value})
    assert not re.search("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]", line)
    line.encode("utf-8")  # never a lone surrogate


def test_text_format_escapes_messages_not_made_by_kv(captured: io.StringIO) -> None:
    _setup(captured, "text")
    logging.getLogger("thirdparty").warning("reason %s", "bad\nFAKE LINE\x1b[31m")
    out = captured.getvalue()
    assert out.count("\n") == 1 and "\x1b" not in out and "bad\\x0aFAKE LINE" in out


def test_json_format_is_one_object_per_line_with_the_fields(captured: io.StringIO) -> None:
    _setup(captured, "json")
    log = logging.getLogger("agent.commands")
    log.warning(kv("command_rejected", reason="unsigned", id=FORGED, count=3))
    log.info("plain %s", "text\nmore")
    lines = captured.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(x) for x in lines)
    assert first["event"] == "command_rejected" and first["id"] == FORGED and first["count"] == 3
    assert first["level"] == "WARNING" and first["logger"] == "agent.commands"
    assert second["message"] == "plain text\nmore"
    assert "\x1b" not in captured.getvalue()


def test_safeedge_run_accepts_log_format_json() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agent", "run", "--help"], capture_output=True, text=True, check=True
    )
    assert "--log-format" in out.stdout and "json" in out.stdout


def test_logging_format_json_in_the_config_makes_every_line_json(tmp_path: Path) -> None:
    import os
    import signal
    import time

    from provisioning.localbroker import free_port
    from provisioning.simulator import tank_farm_config

    config = tmp_path / "agent.toml"
    text = tank_farm_config(
        modbus_host="127.0.0.1", modbus_port=free_port(), mqtt_host="127.0.0.1",
        mqtt_port=free_port(), data_dir=str(tmp_path / "data"), uplink_enabled=False,
    )  # fmt: skip
    config.write_text(text + '\n[logging]\nformat = "json"\n')
    env = dict(os.environ)
    env.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[2] / ".cache/numba"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(config)],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    assert proc.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            if '"event": "ready"' in line:
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=30)
    lines += rest.splitlines()
    docs = [json.loads(line) for line in lines if line.strip()]
    events = [d.get("event") for d in docs]
    assert "starting" in events and "ready" in events and "stopped" in events, events
    assert proc.returncode == 0
