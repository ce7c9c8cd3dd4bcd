"""Packaging: the packages resolve inside their install, and a built wheel works on its own.

The wheel test builds the wheel from a copy of the sources (no docs/ beside it), installs it
into a fresh venv with no network, and runs the installed ``safeedge listen --validate``
against messages made with the agent's own codec and published through a real Mosquitto.
The fresh venv gets its dependencies from this venv's site-packages through a ``.pth`` file
pointing at a folder of symlinks (everything but SafeEdge's own editable install), not with
``--system-site-packages``: what SafeEdge itself imports can only come from the wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.codec import alarm_body, encode_envelope, state_payload, telemetry_body
from tests.support.install_check import PACKAGES, problems
from tests.support.mosquitto import Broker

REPO = Path(__file__).parents[1]
CHECK = REPO / "tests" / "support" / "install_check.py"
SOURCES = (*PACKAGES, "pyproject.toml", "README.md")


def clean_env(tmp: Path) -> dict[str, str]:
    """This environment, minus whatever could point an interpreter back at the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.pop("VIRTUAL_ENV", None)
    return env | {
        "NUMBA_CACHE_DIR": str(tmp / "numba"),
        "PIP_NO_INDEX": "1",  # never the network
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def test_each_package_resolves_inside_the_dev_install_and_to_no_other_distribution() -> None:
    assert problems(REPO) == []


def test_the_check_names_another_distributions_module_of_the_same_name(tmp_path: Path) -> None:
    decoy = tmp_path / "site"
    (decoy / "buffer").mkdir(parents=True)
    (decoy / "buffer" / "__init__.py").write_text('"""Someone else\'s buffer."""\n')
    info = decoy / "other_buffer-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: other-buffer\nVersion: 1.0\n")
    (info / "top_level.txt").write_text("buffer\n")
    (info / "RECORD").write_text("buffer/__init__.py,,\n")
    env = clean_env(tmp_path) | {"PYTHONPATH": str(decoy)}
    run = subprocess.run(
        [sys.executable, str(CHECK), str(REPO)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert run.returncode == 1, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert "buffer: also provided by the distribution(s) other-buffer" in lines
    assert any(line.startswith("buffer: imported from ") for line in lines) or any(
        line == f"buffer: another copy on sys.path at {decoy / 'buffer'}" for line in lines
    ), lines
    assert not any(line.startswith(("agent:", "rules:", "central:")) for line in lines), lines


def build_wheel(tmp: Path, env: dict[str, str]) -> Path:
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(path, src / name)
    out = tmp / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
         "--no-index", "--quiet", "-w", str(out)],
        check=True, capture_output=True, text=True, env=env, cwd=tmp, timeout=120,
    )  # fmt: skip
    (wheel,) = out.glob("safeedge-*.whl")
    return wheel


def fresh_venv(tmp: Path, wheel: Path, env: dict[str, str]) -> tuple[Path, Path]:
    """A new venv holding the wheel, its dependencies linked from this venv: (bin, site)."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    bin_dir = venv / "bin"
    site = Path(
        subprocess.run(
            [bin_dir / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True, env=env,
        ).stdout.strip()
    )  # fmt: skip
    deps = tmp / "deps"
    deps.mkdir()
    here = Path(sysconfig.get_paths()["purelib"])
    for entry in here.iterdir():
        ours = entry.name.startswith(("safeedge-", "__editable__", "__pycache__"))
        if not ours and entry.suffix != ".pth":
            (deps / entry.name).symlink_to(entry)
    (site / "zz-safeedge-test-deps.pth").write_text(f"{deps}\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(bin_dir / "python"), "install",
         "--no-deps", "--no-index", "--quiet", str(wheel)],
        check=True, capture_output=True, text=True, env=env, cwd=tmp, timeout=120,
    )  # fmt: skip
    return bin_dir, site


def publish(broker: Broker, messages: list[tuple[str, bytes, bool]]) -> None:
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5
    )
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        for topic, payload, retain in messages:
            client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def envelope(stream: str, seq: int, body: bytes) -> bytes:
    return encode_envelope(
        site="S1",
        gateway="G1",
        stream=stream,
        seq=seq,
        ts_ms=1_000 + seq,
        backfill=False,
        body=body,
    )


@pytest.mark.integration
def test_the_wheel_installs_into_a_fresh_venv_and_its_listen_validates_real_messages(
    tmp_path: Path, broker: Broker
) -> None:
    env = clean_env(tmp_path)
    wheel = build_wheel(tmp_path, env)
    names = zipfile.ZipFile(wheel).namelist()
    assert {f"agent/schemas/{n}.json" for n in ("envelope", "telemetry", "cmd")} <= set(names)
    assert "central/listen.py" in names
    assert {"agent/console/static/console.js", "agent/console/static/console.css"} <= set(names)
    assert not any(n.startswith(("docs/", "tests/")) for n in names)
    bin_dir, site = fresh_venv(tmp_path, wheel, env)

    check = subprocess.run(
        [bin_dir / "python", str(CHECK), str(site)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert check.stdout.splitlines() == ["ok"], check.stdout + check.stderr

    root = "safeedge/v1/S1/G1"
    state = state_payload(online=True, ts_ms=1_000, session=1, agent_version="0.1.0")
    publish(broker, [(f"{root}/state", state, True)])  # retained: tells us listen subscribed
    listen = subprocess.Popen(
        [bin_dir / "safeedge", "listen", "--port", str(broker.port), "--json", "--validate",
         "--count", "4", "--site", "S1", "--gateway", "G1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    try:
        assert listen.stdout is not None
        first = json.loads(listen.stdout.readline() or "null")
        assert first is not None, listen.stderr.read() if listen.stderr else ""
        good = telemetry_body([("T1", 1_000, 2.5, None), ("T2", 1_000, None, "bad_comm")])
        alarm = alarm_body(
            tag="GT-102", alarm="high", event="raise", level=1, value=25.4, ts_ms=1_000,
            alarm_id="G1:GT-102:high:1000", extra={"limit": 25.0},
        )  # fmt: skip
        bad = b'{"points": [["T1", 1000, 2.5, "so-so"]]}'
        publish(broker, [
            (f"{root}/telemetry", envelope("telemetry", 1, good), False),
            (f"{root}/alarm", envelope("alarm", 1, alarm), False),
            (f"{root}/telemetry", envelope("telemetry", 2, bad), False),
        ])  # fmt: skip
        out, err = listen.communicate(timeout=20)
    finally:
        listen.kill()
        listen.wait()
    assert listen.returncode == 0, err
    docs = [first, *(json.loads(line) for line in out.splitlines())]
    assert [(d["kind"], d.get("seq")) for d in docs] == [
        ("state", None), ("telemetry", 1), ("alarm", 1), ("telemetry", 2)
    ]  # fmt: skip
    assert [d.get("schema_errors") for d in docs[:3]] == [None, None, None]
    assert docs[2]["body"]["tag"] == "GT-102"
    (violation,) = docs[3]["schema_errors"]
    assert violation.startswith("body/points/0/3: 'so-so' is not one of")


# keep the unused-import linter honest about what the module needs at _ = time
