"""``safeedge run`` and the files its config names: exit 78 naming a missing or unusable TLS or
password file, paths relative to the config file (not the working directory), and the numba
cache in the data directory (not beside the installed ``rules`` package)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import rules
from provisioning.localbroker import free_port
from provisioning.simulator import tank_farm_config


def _env(*, numba_cache: bool = True) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("NUMBA_CACHE_DIR", None)
    if numba_cache:
        env["NUMBA_CACHE_DIR"] = str(Path(__file__).resolve().parents[2] / ".cache/numba")
    return env


def _run(config: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
        cwd=cwd,
    )


def _config(tmp_path: Path, uplink: str) -> Path:
    text = tank_farm_config(
        modbus_host="127.0.0.1",
        modbus_port=free_port(),
        mqtt_host="127.0.0.1",
        mqtt_port=free_port(),
        data_dir="data",
    )
    text = text.replace("[uplink]\n", "[uplink]\n" + uplink, 1)
    site = tmp_path / "site"
    site.mkdir()
    path = site / "agent.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_run_exits_78_naming_a_missing_tls_file_resolved_against_the_config(
    tmp_path: Path,
) -> None:
    path = _config(tmp_path, "")
    path.write_text(path.read_text() + '\n[uplink.tls]\nca_file = "certs/ca.pem"\n')
    done = _run(path, cwd=tmp_path)  # another working directory than the config's
    assert done.returncode == 78, done.stderr
    assert f"uplink.tls.ca_file: file not found: {tmp_path}/site/certs/ca.pem" in done.stderr
    assert "Traceback" not in done.stderr


def test_run_exits_78_naming_a_tls_file_that_is_no_certificate(tmp_path: Path) -> None:
    path = _config(tmp_path, "")
    path.write_text(path.read_text() + '\n[uplink.tls]\nca_file = "ca.pem"\n')
    (tmp_path / "site" / "ca.pem").write_text("not a certificate\n")
    done = _run(path, cwd=tmp_path)
    assert done.returncode == 78, done.stderr
    assert "uplink.tls" in done.stderr
    assert "Traceback" not in done.stderr


def test_run_exits_78_naming_an_unreadable_password_file(tmp_path: Path) -> None:
    path = _config(tmp_path, 'username = "u"\npassword_file = "pw"\n')
    (tmp_path / "site" / "pw").write_bytes(b"\xff\xfe not utf-8")
    (tmp_path / "site" / "pw").chmod(0o600)
    done = _run(path, cwd=tmp_path)
    assert done.returncode == 78, done.stderr
    assert f"uplink.password_file {tmp_path}/site/pw" in done.stderr
    assert "Traceback" not in done.stderr


def _numba_files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.suffix in (".nbi", ".nbc")}


def test_the_numba_cache_goes_to_the_data_dir_not_beside_the_rules_package(
    tmp_path: Path,
) -> None:
    """docs/config.md: without NUMBA_CACHE_DIR the kernels are cached in data_dir/numba-cache."""
    path = _config(tmp_path, "")
    path.write_text(path.read_text().replace("enabled = true", "enabled = false"))
    package = Path(rules.__file__).parent
    before = _numba_files(package)
    log = tmp_path / "stderr.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=_env(numba_cache=False),
            cwd=tmp_path,
        )
        try:
            deadline = time.monotonic() + 90
            while "rules_ready" not in log.read_text() and time.monotonic() < deadline:
                assert proc.poll() is None, log.read_text()
                time.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0, log.read_text()
    assert "rules_ready" in log.read_text()
    cached = _numba_files(tmp_path / "site" / "data" / "numba-cache")
    assert any(p.suffix == ".nbi" for p in cached), sorted(cached)
    assert _numba_files(package) == before


def test_run_exits_78_naming_a_password_file_readable_by_others(tmp_path: Path) -> None:
    path = _config(tmp_path, 'username = "u"\npassword_file = "pw"\n')
    (tmp_path / "site" / "pw").write_text("secret\n")
    (tmp_path / "site" / "pw").chmod(0o640)
    done = _run(path, cwd=tmp_path)
    assert done.returncode == 78, done.stderr
    assert (
        f"uplink.password_file: readable or writable by group/others (mode 0640): "
        f"{tmp_path}/site/pw (hint: run: chmod 600 {tmp_path}/site/pw)"
    ) in done.stderr


def test_run_exits_78_and_leaves_a_foreign_file_at_the_buffer_path_untouched(
    tmp_path: Path,
) -> None:
    path = _config(tmp_path, "")
    data = tmp_path / "site" / "data"
    data.mkdir()
    passwd = Path("/etc/passwd").read_bytes()
    (data / "buffer.db").write_bytes(passwd)
    done = _run(path, cwd=tmp_path)
    assert done.returncode == 78, done.stderr
    assert f"buffer.path: not a SafeEdge buffer database: {data}/buffer.db" in done.stderr
    assert (data / "buffer.db").read_bytes() == passwd
    assert sorted(p.name for p in data.iterdir()) == ["buffer.db"]
