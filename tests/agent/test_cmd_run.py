"""``safeedge run`` as systemd sees it: exit codes for what needs a human."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from provisioning.localbroker import free_port
from provisioning.simulator import tank_farm_config


def _run(config: Path, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[2] / ".cache/numba"))
    return subprocess.run(
        [sys.executable, "-m", "agent", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env,
    )


def test_run_exits_78_naming_the_key_when_the_config_is_invalid(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('[gateway]\nsite = "S1"\nid = "G1"\n\n[uplink]\nhots = "broker"\n')
    done = _run(config)
    assert done.returncode == 78
    assert "uplink.hots" in done.stderr
    assert 'did you mean "host"' in done.stderr
    assert done.stdout == ""


def test_run_exits_78_when_the_config_file_is_missing(tmp_path: Path) -> None:
    done = _run(tmp_path / "nope.toml")
    assert done.returncode == 78
    assert "nope.toml" in done.stderr


def test_run_exits_78_when_the_buffer_key_is_readable_by_others(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    key = data / "buffer.key"
    key.write_bytes(os.urandom(64))
    key.chmod(0o644)
    config = tmp_path / "agent.toml"
    config.write_text(
        tank_farm_config(
            modbus_host="127.0.0.1",
            modbus_port=free_port(),
            mqtt_host="127.0.0.1",
            mqtt_port=free_port(),
            data_dir=str(data),
            uplink_enabled=False,
        )
    )
    done = _run(config, timeout_s=120)
    assert done.returncode == 78, done.stderr
    assert "buffer" in done.stderr
    assert "buffer.key" in done.stderr
