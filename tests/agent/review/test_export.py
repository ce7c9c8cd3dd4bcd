"""``safeedge review export`` and ``buffer export`` on the site history: tidy CSV in the site's
time zone, Parquet when pyarrow is there, quiet when piped into ``head``, exit codes."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import main
from agent.review.export import parquet_available
from tests.agent.review.site import PERIOD, SECONDS, Site


def test_review_export_writes_tidy_csv_in_the_site_time_zone(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = site.run(
        capsys, "export", "--tags", "GT-102,PT-101", *PERIOD, "--tz", "Asia/Shanghai"
    )
    assert code == 0, err
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["time", "tag", "value", "unit", "quality"]
    body = rows[1:]
    assert len(body) == 2 * SECONDS and f"exported {2 * SECONDS} readings" in err
    assert body[0][:2] == ["2026-05-29T04:26:40.000+08:00", "GT-102"] and body[0][3] == "%LEL"
    bad = [r for r in body if r[1] == "PT-101" and r[4] != "good"]
    assert len(bad) == 60 and all(r[2] == "" and r[4] == "bad_comm" for r in bad)
    code, _, err = site.run(capsys, "export", "--tags", "NOPE", *PERIOD)
    assert code == 2 and "NOPE" in err


@pytest.mark.parametrize(
    "command",
    [["buffer", "export"], ["review", "export", "--tags", "GT-102", "--from", "2026-05-28"]],
)
def test_exports_piped_into_head_stop_quietly(site: Site, command: list[str]) -> None:
    cmd = [sys.executable, "-m", "agent", *command, "--config", str(site.config)]
    proc = subprocess.run(
        " ".join(f"'{c}'" for c in cmd) + " | head -n 2",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert len(proc.stdout.splitlines()) == 2
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


def test_parquet_round_trips_exactly_against_the_csv_export(
    site: Site, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import pyarrow.parquet as pq  # a dev dependency (pyproject.toml): the test needs it

    assert parquet_available()
    args = ["--tags", "GT-102,PT-101", *PERIOD, "--tz", "Asia/Shanghai"]
    code, out, err = site.run(capsys, "export", *args)
    assert code == 0, err
    header, *rows = list(csv.reader(io.StringIO(out)))
    target = tmp_path / "site.parquet"
    code, _, err = site.run(capsys, "export", *args, "--format", "parquet", "-o", str(target))
    assert code == 0, err
    table = pq.read_table(target)
    assert table.column_names == header
    assert str(table.schema.field("time").type) == "timestamp[ms, tz=Asia/Shanghai]"
    cols = table.to_pydict()
    got = [
        [
            t.isoformat(timespec="milliseconds"),
            tag,
            "" if v is None else repr(v),
            unit,
            q,
        ]
        for t, tag, v, unit, q in zip(
            cols["time"], cols["tag"], cols["value"], cols["unit"], cols["quality"], strict=True
        )
    ]
    assert len(got) == 2 * SECONDS and any(r[4] == "bad_comm" for r in got)
    assert got == rows  # same rows, same order, every value to the last bit (repr)


def test_parquet_is_refused_clearly_without_pyarrow(
    site: Site, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = tmp_path / "gt.parquet"
    code = subprocess.run(
        [
            sys.executable,
            "-c",
            # as if uninstalled: find_spec gives None and an import fails
            "import sys; sys.modules['pyarrow'] = None\n"
            "from agent.cli import main; sys.exit(main(sys.argv[1:]))",
            *["review", "export", "--config", str(site.config), "--tags", "GT-102", *PERIOD],
            *["--format", "parquet", "-o", str(target)],
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert code.returncode == 2 and "needs pyarrow" in code.stderr and not target.exists()


def test_a_missing_buffer_exits_1_and_another_gateways_buffer_exits_78(
    site: Site, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    text = site.config.read_text()
    empty = tmp_path / "empty.toml"
    empty.write_text(text.replace(str(site.paths.data_dir), str(tmp_path / "nothing")))
    assert main(["review", "alarms", "--config", str(empty)]) == 1
    assert "no buffer database" in capsys.readouterr().err
    other = tmp_path / "other.toml"
    other.write_text(text.replace('id = "GW1"', 'id = "GW2"'))
    assert main(["review", "incidents", "--config", str(other)]) == 78
    assert "belongs to gateway 'GW1'" in capsys.readouterr().err
    assert main(["review", "alarms", "--config", str(site.config), "--tz", "Mars/Base"]) == 2
    assert "Mars/Base" in capsys.readouterr().err
