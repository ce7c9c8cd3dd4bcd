"""A throwaway local Mosquitto for the demo and commissioning dry runs.

Anonymous, loopback only, on a free port, with its own config and log in a directory of ours;
persistence on, so a listener's persistent session survives a broker restart.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["LocalBroker", "find_mosquitto", "free_port"]


def find_mosquitto() -> str | None:
    """Path of the mosquitto binary (Debian installs it in /usr/sbin), or None if absent."""
    found = shutil.which("mosquitto")
    if found:
        return found
    candidate = Path("/usr/sbin/mosquitto")
    return str(candidate) if candidate.exists() else None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LocalBroker:
    host = "127.0.0.1"

    def __init__(self, directory: Path, *, binary: str, port: int | None = None) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.binary = binary
        self.port = port or free_port()
        self.log_file = self.dir / "mosquitto.log"
        self.conf_file = self.dir / "mosquitto.conf"
        self.conf_file.write_text(
            "\n".join(
                [
                    f"listener {self.port} {self.host}",
                    "allow_anonymous true",
                    "persistence true",
                    f"persistence_location {self.dir}/",
                    "user root" if _is_root() else "",
                    f"log_dest file {self.log_file}",
                ]
            )
            + "\n"
        )
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 5.0) -> None:
        self._proc = subprocess.Popen(
            [self.binary, "-c", str(self.conf_file)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited with {self._proc.returncode}; see {self.log_file}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {self.host}:{self.port} in {timeout_s} s")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None


def _is_root() -> bool:
    import os

    return os.geteuid() == 0
