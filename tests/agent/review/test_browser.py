"""The HTML reports render in a real browser: Debian's Chromium, headless, screenshots kept as
test artefacts under .cache/artefacts/ (installed by ``make test``'s system packages)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.review.alarms import alarm_report_html
from agent.review.history import History
from agent.review.kpi import alarm_kpis
from agent.review.text import SiteTime
from buffer import Store
from tests.agent.review.conftest import GW
from tests.agent.review.histories import DAY, T0, random_alarm_history

pytestmark = pytest.mark.integration
ARTEFACTS = Path(__file__).resolve().parents[3] / ".cache" / "artefacts"


def _chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        pytest.fail("chromium is not installed: run `make system-deps` (apt-get install chromium)")
    return found


def test_the_alarm_report_renders_in_headless_chromium(
    make_store: Callable[[], Store], store_paths: dict[str, Path], tmp_path: Path
) -> None:
    lang = "zh"  # the harder page: CJK text in the tables and the plots
    store = make_store()
    device_of = random_alarm_history(store, tags=30, days=2.0, seed=7)
    store.close()
    with History.open(**store_paths, gateway_id=GW) as h:
        log = h.alarms(to_ms=T0 + 2 * DAY)
    k = alarm_kpis(log, from_ms=T0, to_ms=T0 + 2 * DAY, fleeting_ms=10_000, device_of=device_of)
    page = tmp_path / f"alarms-{lang}.html"
    page.write_text(alarm_report_html(k, lang=lang, site=SiteTime("Asia/Shanghai"), gateway=GW))
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTEFACTS / f"review-alarms-{lang}.png"
    shot.unlink(missing_ok=True)
    run = subprocess.run(
        [
            _chromium(),
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1200,2400",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1200, 2400)
    assert len(data) > 50_000  # tables and three plots, not a blank page
