"""``safeedge review alarms | incidents | incident | tune`` end to end on the engine-made site
history of tests/agent/review/site.py."""

from __future__ import annotations

import base64
import csv
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from agent.cli import main
from agent.review.tune import beyond_ceiling, template_ceiling, tune
from agent.tags import TagTable
from rules import load_templates
from tests.agent.review.histories import T0
from tests.agent.review.site import PERIOD, Site


class _Html(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.imgs: list[str] = []
        self.cells: list[str] = []
        self.lang = ""
        self._in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        a = dict(attrs)
        if tag == "html":
            self.lang = a.get("lang") or ""
        if tag == "img":
            self.imgs.append(a.get("src") or "")
        self._in_cell = tag in ("td", "th")
        if self._in_cell:
            self.cells.append("")

    def handle_data(self, data: str) -> None:
        if self._in_cell:
            self.cells[-1] += data

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th"):
            self._in_cell = False


def _parsed(path: Path) -> _Html:
    p = _Html()
    p.feed(path.read_text(encoding="utf-8"))
    assert p.tags[:1] == ["html"] and "body" in p.tags and "table" in p.tags
    for src in p.imgs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    return p


def test_review_alarms_prints_the_kpis_and_writes_html_in_english_and_chinese(
    site: Site, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = site.run(capsys, "alarms", *PERIOD, "--html", str(tmp_path / "en.html"))
    assert code == 0
    assert "Chattering alarms" in out and "+08:00" in out
    en = _parsed(tmp_path / "en.html")
    assert en.lang == "en" and len(en.imgs) == 3  # rate, bad actors, priority
    cells = en.cells
    chatter = cells[cells.index("Chattering alarms (≥ 3 raises in 60 s)") + 1]
    assert chatter.startswith("1 (")  # GT-101 high
    assert cells[cells.index("Standing alarms now") + 1] == "1"  # TT-101 still stuck
    assert "GT-101" in cells and "tank-farm-plc" in cells
    code, out, _ = site.run(
        capsys, "alarms", *PERIOD, "--lang", "zh", "--html", str(tmp_path / "zh.html")
    )
    assert code == 0 and "振荡报警" in out
    zh = _parsed(tmp_path / "zh.html")
    assert zh.lang == "zh-CN" and "报警系统性能评估" in (tmp_path / "zh.html").read_text()


def test_review_incidents_lists_the_leak_and_its_report_has_the_timeline_and_figures(
    site: Site, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = site.run(capsys, "incidents")
    assert code == 0
    ids = [w for w in out.split() if w.endswith("-GT-102")]
    assert ids, out
    code, out, err = site.run(
        capsys,
        "incident",
        ids[0],
        "--html",
        str(tmp_path / "i.html"),
        "--csv",
        str(tmp_path / "i.csv"),
        "--json",
        str(tmp_path / "i.json"),
    )
    assert code == 0, err
    report = json.loads((tmp_path / "i.json").read_text())
    events = [(e["tag"], e["alarm"], e["event"], e.get("user")) for e in report["timeline"]]
    assert ("GT-102", "high", "ack", "op-zhang") in events
    assert ("GT-102", "high", "escalate", None) in events
    (ack,) = [o for o in report["to_ack"] if o["tag"] == "GT-102"]
    assert ack["who"] == "op-zhang" and ack["after_ms"] > 0
    (lead,) = [x for x in report["trend_leads"] if x["tag"] == "GT-102"]
    assert lead["lead_ms"] > 0  # the trend warning came before the level-1 limit
    gt102 = next(t for t in report["tags"] if t["tag"] == "GT-102")
    assert gt102["peak"] == 60.0 and gt102["pre_trigger_samples"] == 300
    assert gt102["beyond_ms"]["high_high"] > 0
    assert {t["tag"] for t in report["tags"]} >= {
        "GT-101",
        "GT-102",
        "TT-101",
        "PT-101",
    }  # one device
    rows = list(csv.reader(io.StringIO((tmp_path / "i.csv").read_text())))
    assert rows[0] == ["time", "tag", "value", "unit", "quality"] and rows[1][0].endswith("+08:00")
    page = _parsed(tmp_path / "i.html")
    assert len(page.imgs) == len(report["tags"]) and "op-zhang" in page.cells


def test_review_tune_equals_rules_replay_on_the_exported_trace_for_every_candidate(
    site: Site, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out_dir = tmp_path / "tune"
    code, out, err = site.run(
        capsys,
        "tune",
        *PERIOD,
        "--tag",
        "GT-102",
        "--param",
        "deadband=0.5,1,2",
        "--param",
        "on_delay_s=0,5,10",
        "--json",
        "--export",
        str(out_dir),
    )
    assert code == 0, err
    doc = json.loads(out)
    assert len(doc["candidates"]) == 10 and doc["acks"] == 1
    assert doc["crossings"] == {"high": 1, "high_high": 1}
    assert doc["ceiling"] == {"high_max": 25.0, "high_high_max": 50.0}  # GB/T 50493-2019
    assert doc["ceiling_source"].startswith("template combustible-gas-lel")
    for n, cand in enumerate(doc["candidates"]):
        assert cand["refused"] is None
        assert (
            main(
                [
                    "rules",
                    "replay",
                    "--rules",
                    str(out_dir / f"rules-{n}.toml"),
                    "--trace",
                    str(out_dir / "trace.csv"),
                ]
            )
            == 0
        )
        replayed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert replayed == cand["events"], cand["label"]
    slow = doc["candidates"][9]  # deadband 2, on_delay 10 s: later, but nothing missed
    assert slow["delays_ms"]["high"][0] >= 10_000 and slow["missed"] == {"high": 0, "high_high": 0}
    code, out, _ = site.run(
        capsys,
        "tune",
        *PERIOD,
        "--tag",
        "GT-101",
        "--param",
        "deadband=0,3",
        "--param",
        "on_delay_s=0,15",
    )
    assert code == 0 and "#4" in out
    code, out, _ = site.run(
        capsys, "tune", *PERIOD, "--tag", "GT-102", "--param", "high=20,30", "--json"
    )
    refused = [c["refused"] for c in json.loads(out)["candidates"]]
    assert code == 0 and refused[:2] == [None, None]
    assert refused[2] is not None and refused[2].startswith(
        "high 30 > high_max 25 (template combustible-gas-lel"
    )


def test_tune_refuses_candidates_above_the_ceiling_and_those_the_engine_rejects(site: Site) -> None:
    ts = T0 + np.arange(600, dtype=np.int64) * 1000
    value = np.where(np.arange(600) > 300, 40.0, 10.0)
    q = np.zeros(600, np.uint8)
    res = tune(
        tag="GT-102",
        rules=site.cfg.rules,
        ts=ts,
        value=value,
        quality=q,
        acks=np.empty(0, np.int64),
        grid=[{"high": 20.0}, {"high": 30.0}, {"high": 55.0}],
        ceiling={"high_max": 25.0},
        tag_names=TagTable(site.cfg).names,
    )
    refused = [c.refused for c in res.candidates]
    assert refused[0] is None and refused[1] is None
    assert refused[2] == "high 30 > high_max 25 (given ceiling)"
    assert refused[3] is not None and "high" in refused[3]  # above the ceiling too
    assert res.candidates[1].delays["high"] == [0] and res.candidates[1].raised == 1
    assert beyond_ceiling({"low": 19.0, "high": 23.0}, {"low_min": 19.5, "high_max": 23.5}) == [
        "low 19 < low_min 19.5"
    ]
    res = tune(
        tag="GT-102",
        rules=site.cfg.rules,
        ts=ts,
        value=value,
        quality=q,
        acks=np.empty(0, np.int64),
        grid=[{"high": 55.0}],
        ceiling={},
        tag_names=TagTable(site.cfg).names,
    )
    assert "high_high" in (res.candidates[1].refused or "")  # high above high_high: config error


def test_template_bounds_are_read_from_the_templates_ceilings() -> None:
    bounds, source = template_ceiling(["combustible-gas-lel"])
    assert bounds == {"high_max": 25.0, "high_high_max": 50.0}
    assert source.startswith("template combustible-gas-lel: GB/T 50493-2019")
    bounds, _ = template_ceiling(["oxygen", "combustible-gas-lel"])  # the strictest of both
    assert bounds == {"high_max": 23.5, "high_high_max": 50.0, "low_min": 19.5}
    for name, tpl in load_templates().items():
        want = (
            {}
            if tpl.ceilings is None
            else {
                k: getattr(tpl.ceilings, k)
                for k in ("high_max", "high_high_max", "low_min", "low_low_min")
                if getattr(tpl.ceilings, k) is not None
            }
        )
        assert template_ceiling([name])[0] == want, name
    assert template_ceiling([]) == ({}, "no template: no ceiling")
