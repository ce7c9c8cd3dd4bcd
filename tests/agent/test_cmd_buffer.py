"""``safeedge buffer stats | verify | export | rotate-key`` against a real buffer, while a
writer (standing in for the running agent) holds it and after it stopped."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.cli import main
from agent.config import load_config, resolved_paths
from buffer import Store, Stream
from provisioning.simulator import tank_farm_config

GW = "GW1"
T0 = 1_714_550_400_000  # 2024-05-01T08:00:00Z
HOUR = 3_600_000


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(
        tank_farm_config(
            modbus_host="127.0.0.1",
            modbus_port=5020,
            mqtt_host="127.0.0.1",
            mqtt_port=1883,
            data_dir=str(tmp_path / "data"),
        )
    )
    return path


def open_store(config: Path) -> Store:
    paths = resolved_paths(load_config(config), config)
    return Store.open(path=paths.buffer_path, key_file=paths.buffer_key_file, gateway_id=GW)


@pytest.fixture
def running(config: Path) -> Iterator[Store]:
    """A store holding known records, open (locked) as the running agent holds it."""
    store = open_store(config)
    store.append(Stream.ALARM, [b'{"tag": "GT-102", "level": 2}'], created_ms=T0)
    store.append(Stream.EVENT, [b"not json \xff"], created_ms=T0 + HOUR)
    for i in range(4):
        store.append(
            Stream.TELEMETRY, [b'{"points": [["LT-401", %d, 7.25]]}' % i], created_ms=T0 + i * HOUR
        )
    store.settle(accepted=[(Stream.ALARM, 1)], rejected=[(Stream.TELEMETRY, 1, "too old")])
    yield store
    store.close()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["buffer", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_stats_reads_the_buffer_while_the_agent_holds_it(
    config: Path, running: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "stats", "--config", str(config), "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["streams"]["alarm"]["delivered"] == 1
    assert doc["streams"]["telemetry"]["undelivered"] == 3
    assert doc["streams"]["telemetry"]["dead"] == 1
    assert doc["bytes"] == running.stats().bytes
    code, out, _ = run(capsys, "stats", "--config", str(config))
    assert code == 0
    assert out.splitlines()[3].split()[:4] == ["telemetry", "3", "0", "1"]


def test_stats_works_from_another_process_beside_the_running_agent(
    config: Path, running: Store
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agent", "buffer", "stats", "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["streams"]["telemetry"]["last_seq"] == 4
    running.append(Stream.ALARM, [b"{}"])  # the agent is not disturbed


def test_verify_passes_a_sound_buffer_and_changes_nothing(
    config: Path, running: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    before = running.stats()
    code, out, _ = run(capsys, "verify", "--config", str(config))
    assert code == 0
    assert "checked 1 alarm, 1 event, 4 telemetry, 0 incident; 0 failed authentication" in out
    assert "database check: ok" in out
    assert running.stats() == before


def test_verify_fails_and_names_a_tampered_record_without_quarantining_it(
    config: Path, running: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    running.close()
    db = resolved_paths(load_config(config), config).buffer_path
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE records SET sealed = zeroblob(length(sealed)) WHERE stream = 2 AND seq = 3"
        )
    conn.close()
    code, out, err = run(capsys, "verify", "--config", str(config))
    assert code == 1
    assert "FAILED telemetry seq 3: authentication failed" in err
    assert "1 failed authentication" in out
    code, _, _ = run(capsys, "verify", "--config", str(config))
    assert code == 1  # still there: verify never quarantines


def test_export_decrypts_every_record_with_id_state_and_decoded_body(
    config: Path, running: Store, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = tmp_path / "usb" / "handover.jsonl"
    target.parent.mkdir()
    code, _, err = run(capsys, "export", "--config", str(config), "--output", str(target))
    assert code == 0
    assert "exported 6 records, 0 failed" in err
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    docs = [json.loads(line) for line in target.read_text().splitlines()]
    assert [d["id"] for d in docs] == [
        "GW1/alarm/1",
        "GW1/event/1",
        "GW1/telemetry/1",
        "GW1/telemetry/2",
        "GW1/telemetry/3",
        "GW1/telemetry/4",
    ]
    alarm, event, tel1 = docs[0], docs[1], docs[2]
    assert alarm["body"] == {"tag": "GT-102", "level": 2}
    assert (alarm["state"], alarm["created"]) == ("delivered", "2024-05-01T08:00:00.000Z")
    assert event["body_base64"] == "bm90IGpzb24g/w=="
    assert (tel1["state"], tel1["reason"]) == ("dead", "too old")
    assert docs[3]["body"] == {"points": [["LT-401", 1, 7.25]]}


def test_export_selects_by_seq_within_a_stream_or_by_creation_time(
    config: Path, running: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys, "export", "--config", str(config), "--stream", "telemetry", "--from", "2",
        "--to", "3",
    )  # fmt: skip
    assert code == 0
    assert [json.loads(x)["seq"] for x in out.splitlines()] == [2, 3]
    code, out, _ = run(
        capsys, "export", "--config", str(config), "--from", "2024-05-01T09:00:00Z",
        "--to", "2024-05-01T10:00Z",
    )  # fmt: skip
    assert [json.loads(x)["id"] for x in out.splitlines()] == [
        "GW1/event/1",
        "GW1/telemetry/2",
        "GW1/telemetry/3",
    ]


def test_a_seq_bound_without_a_stream_is_a_usage_error(
    config: Path, running: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "export", "--config", str(config), "--from", "2")
    assert code == 2
    assert "add --stream" in err
    code, _, err = run(capsys, "export", "--config", str(config), "--to", "yesterday")
    assert code == 2
    assert "ISO 8601" in err


def test_export_as_csv_has_a_header_and_the_body_as_json_text(
    config: Path, running: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys, "export", "--config", str(config), "--stream", "alarm", "--format", "csv"
    )
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 1
    assert rows[0]["id"] == "GW1/alarm/1"
    assert json.loads(rows[0]["body"]) == {"tag": "GT-102", "level": 2}
    assert rows[0]["state"] == "delivered"


def test_rotate_key_refuses_while_the_agent_runs_and_rotates_once_it_stopped(
    config: Path, running: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "rotate-key", "--config", str(config))
    assert code == 1
    assert "the agent is running; stop it" in err
    running.close()
    code, out, _ = run(capsys, "rotate-key", "--config", str(config))
    assert code == 0
    assert "sealed with key 2 (was 1); kept keys [1]" in out
    store = open_store(config)
    assert store.stats().key_ids == (1, 2)
    store.append(Stream.ALARM, [b"{}"])
    store.close()
    code, out, _ = run(capsys, "verify", "--config", str(config))
    assert code == 0
    assert "checked 2 alarm" in out


def test_a_missing_buffer_or_a_bad_config_is_reported_not_created(
    config: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, "stats", "--config", str(config))
    assert code == 1
    assert "no buffer database here" in err
    assert not (tmp_path / "data" / "buffer.db").exists()
    bad = tmp_path / "bad.toml"
    bad.write_text("[gateway]\n")
    code, _, _ = run(capsys, "verify", "--config", str(bad))
    assert code == 78


def test_a_key_file_readable_by_others_is_refused_as_needing_a_human(
    config: Path, running: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    key = resolved_paths(load_config(config), config).buffer_key_file
    key.chmod(0o644)
    code, _, err = run(capsys, "export", "--config", str(config))
    assert code == 78
    assert "chmod 600" in err


def test_verify_and_export_read_a_damaged_file_as_far_as_it_goes(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = open_store(config)
    for first in range(1, 1001, 100):
        store.append(
            Stream.TELEMETRY,
            [b'{"n": %d, "pad": "%s"}' % (q, b"x" * 200) for q in range(first, first + 100)],
        )
    store.close()
    db = tmp_path / "data" / "buffer.db"
    data = bytearray(db.read_bytes())
    for page in range(3, len(data) // 4096, 5):  # every fifth page overwritten
        data[page * 4096 : page * 4096 + 64] = b"\xee" * 64
    db.write_bytes(bytes(data))
    code, out, err = run(capsys, "verify", "--config", str(config))
    assert code == 1
    assert "reading it page by page" in err
    assert "pages could not be read and were skipped" in err
    code, out, err = run(capsys, "export", "--config", str(config), "--stream", "telemetry")
    assert code == 1
    exported = [json.loads(line) for line in out.splitlines()]
    assert 500 < len(exported) < 1000
    assert all(doc["body"]["n"] == doc["seq"] for doc in exported)
    assert len({doc["seq"] for doc in exported}) == len(exported)


def test_export_reads_a_moved_aside_file_with_its_key_copy(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = open_store(config)
    store.append(Stream.ALARM, [b'{"a": 1}', b'{"a": 2}'])
    store.close()
    db = tmp_path / "data" / "buffer.db"
    db.write_bytes(db.read_bytes()[:-4096])  # the last page lost
    reopened = open_store(config)
    moved = reopened.recovered_from
    reopened.close()
    assert moved is not None
    code, out, _ = run(capsys, "export", "--config", str(config), "--file", str(moved))
    assert [json.loads(line)["body"] for line in out.splitlines()] == [{"a": 1}, {"a": 2}]


def test_rotate_key_writes_through_a_symlinked_key_file_to_its_target(
    config: Path, running: Store, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    key = resolved_paths(load_config(config), config).buffer_key_file
    running.close()
    vault = tmp_path / "vault"
    vault.mkdir(mode=0o700)
    target = vault / "buffer.key"
    key.rename(target)
    key.symlink_to(target)
    code, out, err = run(capsys, "rotate-key", "--config", str(config))
    assert code == 0, err
    assert key.is_symlink() and key.resolve() == target  # the link is kept
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in vault.iterdir()) == ["buffer.key"]  # no temporary left
    assert json.loads(target.read_text())["keys"][-1]["id"] == 2  # the target has both keys
    store = open_store(config)
    assert store.stats().key_ids == (1, 2)
    store.close()
    code, out, _ = run(capsys, "verify", "--config", str(config))
    assert code == 0, out
