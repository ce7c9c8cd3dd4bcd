"""``safeedge sign-command``: keys, signing, publishing; and the agent's config of its keys."""

from __future__ import annotations

import base64
import stat
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from agent.commands import load_public_keys
from agent.config import ConfigError, check_config, loads_config
from tests.support.mosquitto import Broker, Subscriber

REPO = Path(__file__).parents[2]


def safeedge(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "sign-command", *args],
        capture_output=True, text=True, input=stdin, cwd=REPO, timeout=30,
    )  # fmt: skip


def public_key_from(out: str) -> str:
    return out.split('"')[-2]


def test_keygen_writes_a_private_key_only_its_owner_reads_and_prints_the_config_line(
    tmp_path: Path,
) -> None:
    done = safeedge("keygen", "--kid", "p1", "--out-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    key = tmp_path / "p1.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    public = public_key_from(done.stdout)
    assert (tmp_path / "p1.pub").read_text().strip() == public
    cfg = loads_config(f'[gateway]\nsite="S"\nid="G"\n[commands]\ntrusted_keys={{p1="{public}"}}\n')
    assert check_config(cfg) == []
    assert set(load_public_keys(cfg.commands.trusted_keys)) == {"p1"}
    again = safeedge("keygen", "--kid", "p1", "--out-dir", str(tmp_path))
    assert again.returncode == 2
    assert "exists" in again.stderr


def test_a_signed_command_verifies_under_the_printed_public_key(tmp_path: Path) -> None:
    public = public_key_from(safeedge("keygen", "--kid", "p1", "--out-dir", str(tmp_path)).stdout)
    command = '{"gw": "G1", "cmd": "ack_alarm", "args": {"tag": "GT-102"}, "id": "c-1"}'
    done = safeedge("sign", "--key", str(tmp_path / "p1.key"), "--kid", "p1", "--json", "-",
                    stdin=command)  # fmt: skip
    assert done.returncode == 0, done.stderr
    msg = msgspec.json.decode(done.stdout)
    assert msg["kid"] == "p1"
    payload = base64.b64decode(msg["payload"])
    key = load_public_keys({"p1": public})["p1"]
    key.verify(base64.b64decode(msg["sig"]), payload)  # raises when it does not verify
    doc = msgspec.json.decode(payload)
    assert (doc["id"], doc["gw"], doc["cmd"], doc["args"]) == ("c-1", "G1", "ack_alarm",
                                                               {"tag": "GT-102"})  # fmt: skip
    assert type(doc["ts"]) is int


def test_an_unusable_key_or_command_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "bad.key").write_text("not a key")
    done = safeedge("sign", "--key", str(tmp_path / "bad.key"), "--kid", "p", "--gw", "G",
                    "--cmd", "ping")  # fmt: skip
    assert done.returncode == 2
    safeedge("keygen", "--kid", "p", "--out-dir", str(tmp_path))
    done = safeedge("sign", "--key", str(tmp_path / "p.key"), "--kid", "p", "--cmd", "ping")
    assert (done.returncode, done.stderr.strip()) == (
        2,
        "safeedge sign-command sign: the command needs a string 'gw'",
    )


def test_a_bad_trusted_key_is_a_config_issue_named_by_its_key_id() -> None:
    with pytest.raises(ConfigError) as info:
        loads_config('[gateway]\nsite="S"\nid="G"\n[commands]\ntrusted_keys={p1="c2hvcnQ="}\n')
    [issue] = info.value.issues
    assert issue.path == "commands.trusted_keys.p1"
    assert "32-byte Ed25519" in issue.message


@pytest.mark.integration
def test_publish_puts_the_command_on_the_gateways_cmd_topic_and_waits_for_an_answer(
    tmp_path: Path, broker: Broker
) -> None:
    safeedge("keygen", "--kid", "p", "--out-dir", str(tmp_path))
    with Subscriber(broker, "safeedge/v1/S1/G1/cmd") as gateway_side:
        done = safeedge("sign", "--key", str(tmp_path / "p.key"), "--kid", "p", "--gw", "G1",
                        "--cmd", "ping", "--publish", "--site", "S1", "--port", str(broker.port),
                        "--wait", "0.5")  # fmt: skip
        got = gateway_side.wait_for(lambda m: True)
    assert msgspec.json.decode(got.payload) == msgspec.json.decode(done.stdout.splitlines()[0])
    assert done.returncode == 1  # nobody answered: no agent runs here
    assert "no cmd/result within 0.5 s" in done.stderr
