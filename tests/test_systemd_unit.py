"""The shipped unit: its sandbox score, its names, and the agent starting inside what of the
sandbox can be reproduced here (a non-root user, systemd's credentials and runtime directory,
UMask=0077, sd_notify), talking to a real Mosquitto with the password from the credential."""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from buffer import crypto
from tests.conftest import BrokerFactory
from tests.support.agentproc import ROOT, GasLine, agent_config, env

UNIT = ROOT / "systemd" / "safeedge.service"
INSTALL = ROOT / "systemd" / "install.sh"
CONFIG_PATH = "/etc/safeedge/agent.toml"


def _unit_lines() -> list[str]:
    return [ln.strip() for ln in UNIT.read_text().splitlines() if ln and not ln.startswith("#")]


def test_the_unit_scores_at_most_2_5_exposure_offline() -> None:
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(UNIT)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    found = re.search(r"Overall exposure level for safeedge\.service: (\d+\.\d+)", done.stdout)
    assert found, done.stdout + done.stderr
    assert float(found[1]) <= 2.5, done.stdout


def test_the_unit_reloads_loads_credentials_and_keeps_numba_working() -> None:
    lines = _unit_lines()
    assert "ExecReload=/bin/kill -HUP $MAINPID" in lines
    assert "LoadCredential=buffer.key:/etc/safeedge/credentials/buffer.key" in lines
    assert "LoadCredential=broker-password:/etc/safeedge/credentials/broker-password" in lines
    assert "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6" in lines
    assert not any(ln.startswith("MemoryDenyWriteExecute") for ln in lines)  # numba's JIT
    assert "DevicePolicy=closed" in lines and "DeviceAllow=char-ttyS rw" in lines
    assert "RuntimeDirectory=safeedge" in lines


def test_one_config_file_name_across_unit_installer_and_docs() -> None:
    assert f"--config {CONFIG_PATH}" in UNIT.read_text()
    assert CONFIG_PATH in INSTALL.read_text()
    for doc in (ROOT / "docs").glob("*.md"):
        assert "/etc/safeedge/safeedge.toml" not in doc.read_text(), doc
    assert CONFIG_PATH in (ROOT / "docs" / "operations.md").read_text()
    # the installer creates the credential files the unit loads
    assert "creds=/etc/safeedge/credentials\n" in INSTALL.read_text()
    for name in ("buffer.key", "broker-password"):
        assert f'"$creds/{name}"' in INSTALL.read_text()
        assert f"LoadCredential={name}:/etc/safeedge/credentials/{name}" in _unit_lines()


@pytest.fixture
def sandbox() -> Iterator[Path]:
    """A directory owned by nobody (pytest's tmp_path is root's, mode 0700)."""
    d = Path(tempfile.mkdtemp(prefix="safeedge-sandbox-"))
    nobody = pwd.getpwnam("nobody")
    os.chown(d, nobody.pw_uid, nobody.pw_gid)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.integration
def test_the_agent_runs_as_a_non_root_user_with_credentials_and_a_runtime_directory(
    sandbox: Path, make_broker: BrokerFactory
) -> None:
    if os.geteuid() != 0:
        pytest.fail("this test changes user: run it as root (the CI container is)")
    nobody = pwd.getpwnam("nobody")
    uid, gid = nobody.pw_uid, grp.getgrnam("nogroup").gr_gid
    broker = make_broker(mode="password", users={"gw1": "s3cret pass"})
    creds, state, runtime, cache = (sandbox / n for n in ("creds", "state", "run", "cache"))
    for d in (creds, state, runtime, cache):
        d.mkdir(mode=0o700)
    crypto.write_key_file(creds / "buffer.key", [crypto.new_key(1, "aes-256-gcm", 0)])
    (creds / "broker-password").write_text("s3cret pass\n")
    for f in creds.iterdir():
        f.chmod(0o400)  # as systemd leaves them
    shutil.copytree(ROOT / ".cache/numba", cache / "numba", dirs_exist_ok=True)
    line = GasLine()
    os.chmod(line.path, 0o666)  # the pty stands in for a dialout-group serial port
    config = sandbox / "agent.toml"
    text = agent_config(data_dir=state, line=line.path, mqtt_port=broker.port)
    config.write_text(text.replace("[uplink]\n", '[uplink]\nusername = "gw1"\n', 1))
    for p in [*sandbox.rglob("*"), sandbox]:
        os.lchown(p, uid, gid)
    notify_path = sandbox / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(60)
    os.chown(notify_path, uid, gid)
    log = sandbox / "agent.log"
    agent_env = {
        **env(),
        "CREDENTIALS_DIRECTORY": str(creds),
        "RUNTIME_DIRECTORY": str(runtime),
        "NUMBA_CACHE_DIR": str(cache / "numba"),
        "NOTIFY_SOCKET": str(notify_path),
        "HOME": str(sandbox),
    }
    # Not reproducible here: the mount namespace, seccomp and device cgroup of the unit. The
    # interpreter lives under /root (0700), so the user keeps one capability, to read files;
    # writes (data dir, socket) still go through nobody's own permissions.
    cmd = [
        "setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
        "--inh-caps=-all,+dac_read_search", "--ambient-caps=-all,+dac_read_search",
        "--bounding-set=-all,+dac_read_search", "--no-new-privs",
        "sh", "-c", 'umask 077; exec "$0" -m agent run --config "$1"',
        sys.executable, str(config),
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=out, env=agent_env)
    try:
        assert notify.recv(4096) == b"READY=1", log.read_text()
        _wait(lambda: "uplink_connected" in log.read_text(), log)
        assert (runtime / "status.sock").is_socket()
        assert os.stat(runtime / "status.sock").st_uid == uid
        db = state / "buffer.db"
        assert os.stat(db).st_uid == uid and os.stat(db).st_mode & 0o077 == 0  # UMask=0077
        assert not (state / "buffer.key").exists()  # the key came from the credential
        proc.send_signal(signal.SIGHUP)  # what ExecReload does
        _wait(lambda: "reload_unchanged" in log.read_text(), log)
    finally:
        proc.terminate()
        code = proc.wait(30)
        notify.close()
        line.close()
    assert code == 0, log.read_text()[-3000:]


def _wait(cond: object, log: Path, timeout_s: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(log.read_text()[-3000:])
        time.sleep(0.1)
