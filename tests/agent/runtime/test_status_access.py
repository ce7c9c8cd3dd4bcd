"""Who may read ``safeedge status``: the control socket of a real agent is mode 0660 in the
configured ``status_group``; a user of that group reads it, a user outside it is refused (the
kernel checks the socket file's write bit on connect), ``--watch`` keeps printing, and the
metrics endpoint stays off unless enabled; a device back online still shows why it was down."""

from __future__ import annotations

import grp
import json
import os
import pwd
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.agentproc import AgentProc, GasLine, agent_config, env

pytestmark = pytest.mark.integration

GROUP = "nogroup"  # nobody's group on Debian


@pytest.fixture
def line() -> Iterator[GasLine]:
    gas = GasLine()
    yield gas
    gas.close()


def _status_as(user: str, group: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``safeedge status`` as ``user``:``group`` with no other group. The interpreter and the
    test's directories are root's (0700), so the user keeps CAP_DAC_READ_SEARCH, which reads
    and searches but never grants the write a connect to a socket needs."""
    uid, gid = pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid
    cmd = [
        "setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
        "--inh-caps=-all,+dac_read_search", "--ambient-caps=-all,+dac_read_search",
        "--bounding-set=-all,+dac_read_search", "--no-new-privs",
        sys.executable, "-B", "-m", "agent", "status", *args,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env())


def test_the_status_socket_is_for_its_group_only_and_watch_keeps_printing(
    tmp_path: Path, line: GasLine
) -> None:
    if os.geteuid() != 0:
        pytest.fail("this test changes user: run it as root (the CI container is)")
    data = tmp_path / "data"
    config = tmp_path / "agent.toml"
    extra = f'\n[operations]\nstatus_group = "{GROUP}"\n'
    config.write_text(agent_config(data_dir=data, line=line.path, extra=extra))
    agent = AgentProc(config)
    sock = data / "status.sock"
    try:
        agent.wait_log("status_socket")
        agent.wait_log(" ready devices")
        st = os.stat(sock)
        assert stat.S_IMODE(st.st_mode) == 0o660, oct(st.st_mode)
        assert st.st_gid == grp.getgrnam(GROUP).gr_gid
        member = _status_as("nobody", GROUP, "--socket", str(sock), "--json")
        assert member.returncode == 0, member.stderr
        assert json.loads(member.stdout)["gateway"] == "GW1"
        outsider = _status_as("daemon", "daemon", "--socket", str(sock), "--json")
        assert outsider.returncode == 1 and outsider.stdout == ""
        assert "Permission denied" in outsider.stderr and str(sock) in outsider.stderr
        watch = subprocess.Popen(
            [sys.executable, "-m", "agent", "status", "--socket", str(sock), "--json",
             "--watch", "0.2"],
            stdout=subprocess.PIPE, text=True, env=env(),
        )  # fmt: skip
        try:
            assert watch.stdout is not None
            docs = [json.loads(watch.stdout.readline()) for _ in range(3)]
        finally:
            watch.kill()
            watch.wait(10)
            if watch.stdout is not None:
                watch.stdout.close()
        assert [d["gateway"] for d in docs] == ["GW1"] * 3
        # the controller goes quiet and comes back: the status still says why it was down
        line.paused = True
        agent.wait_log("device_lost")
        line.paused = False
        agent.wait_log("device_restored")
        member = _status_as("nobody", GROUP, "--socket", str(sock), "--json")
        (dev,) = json.loads(member.stdout)["devices"]
        assert dev["state"] == "online" and dev["last_error_reason"] == "timeout"
        assert dev["last_error"].startswith("no valid frame within"), dev
        log = agent.log()
    finally:
        assert agent.stop() == 0
    assert "metrics_listening" not in log  # [operations.metrics] is off by default
