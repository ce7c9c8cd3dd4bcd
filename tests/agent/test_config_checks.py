"""Configs that ``check-config`` used to accept and ``run`` then rejected, crashed on, or ran
meaninglessly (issue 9): each is now an issue with its key path (and, for numbers, the range)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from agent.config import ConfigError, ConfigIssue, file_issues, load_config, loads_config

BASE = """
[gateway]
site = "S1"
id = "G1"
{top}
[[devices]]
driver = "modbus_tcp"
name = "plc-1"
host = {host}
{device}
  [[devices.tags]]
  name = "GT-101"
  address = 0
  {tag}
"""


def config(*, top: str = "", host: str = '"10.0.0.5"', device: str = "", tag: str = "") -> str:
    return textwrap.dedent(BASE).format(top=top, host=host, device=device, tag=tag)


def issues(text: str) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as info:
        loads_config(text, source="site.toml")
    return info.value.issues


DEVICE = 'devices[0] "plc-1"'
TAG = f'{DEVICE}.tags[0] "GT-101"'

# (config, the issue's path, a piece of its message)
CASES = [
    pytest.param(
        config(device="max_registers = 3", tag='type = "float64"'),
        f"{TAG}.type",
        "needs 4 registers but max_registers is 3",
        id="float64-over-3-registers",
    ),
    pytest.param(config(top='[uplink]\nprefix = "a/#"'), "uplink.prefix", "'+', '#'", id="prefix#"),
    pytest.param(config(top='[uplink]\nprefix = ""'), "uplink.prefix", "non-empty", id="prefix-"),
    pytest.param(
        config(top="[buffer]\ncapacity_mb = inf"),
        "buffer.capacity_mb",
        "must be a finite number in [1, 1048576], got inf",
        id="capacity-inf",
    ),
    pytest.param(
        config(top="[buffer]\ncapacity_mb = 1e-300"),
        "buffer.capacity_mb",
        "got 1e-300",
        id="capacity-tiny",
    ),
    pytest.param(
        config(top="[buffer]\nretention_days = inf"),
        "buffer.retention_days",
        "must be a finite number in [0.001, 36500], got inf",
        id="retention-inf",
    ),
    pytest.param(
        config(top="[buffer.telemetry]\ncapacity_mb = inf"),
        "buffer.telemetry.capacity_mb",
        "got inf",
        id="telemetry-capacity-inf",
    ),
    pytest.param(
        config(top="[uplink]\nbackfill_after_s = 1e308"),
        "uplink.backfill_after_s",
        "must be a finite number in [0, 86400], got 1e+308",
        id="backfill-huge",
    ),
    pytest.param(config(host='"plc\\u0000"'), f"{DEVICE}.host", "control character", id="host-nul"),
    pytest.param(config(tag="scale = nan"), f"{TAG}.scale", "got nan", id="scale-nan"),
    pytest.param(config(tag="offset = inf"), f"{TAG}.offset", "got inf", id="offset-inf"),
    pytest.param(config(tag="range = [nan, 100]"), f"{TAG}.range", "got nan", id="range-nan"),
    pytest.param(
        config(device="poll_interval_s = inf"),
        f"{DEVICE}.poll_interval_s",
        "must be a finite number in [0.001, 86400], got inf",
        id="poll-inf",
    ),
    pytest.param(
        config(top="[uplink]\nreconnect_min_s = 1e-9"),
        "uplink.reconnect_min_s",
        "must be a finite number in [0.01, 3600], got 1e-09",
        id="reconnect-busy-loop",
    ),
    pytest.param(
        config(top='[[rules]]\ntags = ["GT-101"]\nhigh = 25.0\non_delay_s = 1e308'),
        "rules[0].on_delay_s",
        "must be a finite number in [0, 604800], got 1e+308",
        id="on-delay-never",
    ),
]


@pytest.mark.parametrize(("text", "path", "message"), CASES)
def test_a_config_that_run_would_reject_is_rejected_with_its_key_path(
    text: str, path: str, message: str
) -> None:
    found = issues(text)
    assert any(i.path == path and message in i.message for i in found), found


def test_the_reference_values_are_still_accepted() -> None:
    loads_config(config(device="max_registers = 4", tag='type = "float64"\nscale = 0.1'))


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site" / "agent.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_a_buffer_path_naming_a_directory_is_an_issue_of_the_file_check(tmp_path: Path) -> None:
    (tmp_path / "data" / "db").mkdir(parents=True)
    path = _write(tmp_path, config(top=f'[buffer]\npath = "{tmp_path}/data/db"'))
    cfg = load_config(path)  # the pure checks pass: only the file system knows
    assert [(i.path, i.message) for i in file_issues(cfg)] == [
        ("buffer.path", f"is a directory: {tmp_path}/data/db")
    ]
    with pytest.raises(ConfigError) as info:
        load_config(path, check_files=True)
    assert info.value.issues[0].path == "buffer.path"


def test_missing_tls_and_password_files_are_named_resolved_against_the_config(
    tmp_path: Path,
) -> None:
    top = '[uplink]\nusername = "u"\npassword_file = "pw"\n[uplink.tls]\nca_file = "certs/ca.pem"'
    path = _write(tmp_path, config(top=top))
    site = tmp_path / "site"
    with pytest.raises(ConfigError) as info:
        load_config(path, check_files=True)
    assert [(i.path, i.message) for i in info.value.issues] == [
        ("uplink.password_file", f"file not found: {site}/pw"),
        ("uplink.tls.ca_file", f"file not found: {site}/certs/ca.pem"),
    ]
    (site / "certs").mkdir()
    (site / "certs" / "ca.pem").write_text("x")
    (site / "pw").write_text("secret\n")
    (site / "pw").chmod(0o600)
    cfg = load_config(path, check_files=True)
    assert cfg.uplink.tls is not None
    assert cfg.uplink.tls.ca_file == str(site / "certs" / "ca.pem")  # what Uplink reads
    assert cfg.uplink.password_file == str(site / "pw")


def test_check_config_stats_the_files_with_files_as_run_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent.cli import main

    path = _write(tmp_path, config(top='[uplink.tls]\nca_file = "ca.pem"'))
    assert main(["check-config", str(path)]) == 0
    assert main(["check-config", "--files", str(path)]) == 78
    err = capsys.readouterr().err
    assert f"{path}: uplink.tls.ca_file: file not found: {tmp_path}/site/ca.pem" in err


def test_check_config_files_names_a_foreign_file_at_the_buffer_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent.cli import main

    (tmp_path / "data").mkdir()
    foreign = tmp_path / "data" / "passwd.copy"
    foreign.write_bytes(Path("/etc/passwd").read_bytes())
    path = _write(tmp_path, config(top=f'[buffer]\npath = "{foreign}"'))
    assert main(["check-config", "--files", str(path)]) == 78
    err = capsys.readouterr().err
    assert f"{path}: buffer.path: not a SafeEdge buffer database: {foreign}" in err
    foreign.write_bytes(b"")  # an empty file is a fresh database
    assert main(["check-config", "--files", str(path)]) == 0


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o620])
def test_a_password_file_or_tls_key_with_group_or_other_bits_is_refused(
    tmp_path: Path, mode: int
) -> None:
    top = (
        '[uplink]\nusername = "u"\npassword_file = "pw"\n'
        '[uplink.tls]\nca_file = "ca.pem"\ncert_file = "gw.pem"\nkey_file = "gw.key"'
    )
    path = _write(tmp_path, config(top=top))
    site = tmp_path / "site"
    for name in ("pw", "ca.pem", "gw.pem", "gw.key"):
        (site / name).write_text("x")
        (site / name).chmod(mode)
    with pytest.raises(ConfigError) as info:
        load_config(path, check_files=True)
    assert [(i.path, i.message) for i in info.value.issues] == [
        (
            "uplink.password_file",
            f"readable or writable by group/others (mode {mode:04o}): {site}/pw",
        ),
        (
            "uplink.tls.key_file",
            f"readable or writable by group/others (mode {mode:04o}): {site}/gw.key",
        ),
    ]
    for name in ("pw", "gw.key"):
        (site / name).chmod(0o600)
    assert load_config(path, check_files=True).uplink.tls is not None
