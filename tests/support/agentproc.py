"""A real ``safeedge run`` process fed by a gas controller on a pseudo-terminal whose value the
test sets, for the operations tests (restart, reload, status). Nothing here is mocked: the
agent is its own process, the line is a real pty, the buffer a real SQLite file."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import tty
from collections.abc import Callable
from pathlib import Path
from typing import Any

from buffer.reader import StoreReader
from buffer.record import Stream
from provisioning.simulator_serial import gas_sentence

__all__ = ["AgentProc", "GasLine", "agent_config", "records", "wait_for"]

ROOT = Path(__file__).resolve().parents[2]


class GasLine:
    """Channel 1 of an ASCII gas controller: pushes ``value`` every 0.2 s while started and
    not ``paused`` (a controller that went quiet)."""

    def __init__(self) -> None:
        self.value = 5.0
        self.paused = False
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._push, daemon=True)
        self._thread.start()

    def _push(self) -> None:
        while not self._stop.wait(0.2):
            # nobody reading: the line overflows, as a real one would
            if not self.paused:
                with contextlib.suppress(BlockingIOError, OSError):
                    os.write(self._master, gas_sentence(1, self.value))
            with contextlib.suppress(BlockingIOError, OSError):
                os.read(self._master, 4096)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        os.close(self._master)
        os.close(self._slave)


def agent_config(
    *,
    data_dir: Path,
    line: str,
    high: float = 25.0,
    latch: bool = False,
    mqtt_port: int | None = None,
    trusted_keys: dict[str, str] | None = None,
    extra: str = "",
) -> str:
    keys = ", ".join(f'"{k}" = "{v}"' for k, v in (trusted_keys or {}).items())
    return f"""
[gateway]
site = "S1"
id = "GW1"
data_dir = "{data_dir}"

[uplink]
enabled = {"true" if mqtt_port else "false"}
host = "127.0.0.1"
port = {mqtt_port or 1883}

[commands]
trusted_keys = {{{keys}}}

[buffer]
path = "buffer.db"
key_file = "buffer.key"
{extra}
[[serial_ports]]
name = "gas-line"
path = "{line}"
baudrate = 115200

[[devices]]
driver = "serial_line"
name = "gas-controller"
serial_port = "gas-line"
poll_interval_s = 0.5
timeout_s = 0.5
framing = "start_end"
start = "$"
end = "\\r\\n"
checksum = "xor"
key_field = 1

[[devices.tags]]
name = "GT-301"
field = 2
key = "1"
unit = "%LEL"
range = [0.0, 100.0]

[[rules]]
tags = ["GT-301"]
high = {high}
high_high = 50.0
high_high_deadband = 20.0
latch = {"true" if latch else "false"}
"""


def env() -> dict[str, str]:
    out = dict(os.environ)
    out.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".cache/numba"))
    return out


class AgentProc:
    """``safeedge run --config CONFIG``; stderr goes to ``log_path`` (read by :meth:`wait_log`)."""

    def __init__(self, config: Path, *, extra_env: dict[str, str] | None = None) -> None:
        self.log_path = config.with_name(f"agent-{time.monotonic_ns()}.log")
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            env={**env(), **(extra_env or {})},
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout_s: float = 60.0, *, count: int = 1) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            out = self.log()
            if out.count(text) >= count:
                return out
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited {self.proc.returncode}:\n{out[-3000:]}")
            time.sleep(0.1)
        raise AssertionError(f"no {text!r} in the agent's log within {timeout_s}s:\n{out[-3000:]}")

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self._log.close()

    def stop(self, timeout_s: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        code = self.proc.wait(timeout_s)
        self._log.close()
        return code


def records(data_dir: Path, stream: Stream = Stream.ALARM) -> list[dict[str, Any]]:
    with StoreReader.open(
        path=data_dir / "buffer.db", key_file=data_dir / "buffer.key", gateway_id="GW1"
    ) as reader:
        return [json.loads(r.payload or b"null") for r in reader.records(stream=stream)]


def wait_for(what: Callable[[], bool], timeout_s: float = 30.0, note: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not what():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {note or what}")
        time.sleep(0.1)
