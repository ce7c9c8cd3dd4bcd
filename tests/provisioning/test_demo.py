"""``safeedge demo`` as `make demo` runs it: simulator, Mosquitto, agent and listener."""

from __future__ import annotations

import io
import re
import shutil
import threading
import urllib.request
from pathlib import Path

import pytest

from provisioning.demo import DemoOptions, DemoResult, run_demo

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class _BoardWatcher:
    """Reads the demo's console board (anonymous wall-screen view) while the demo runs."""

    def __init__(self, out: io.StringIO) -> None:
        self.out = out
        self.saw_leak = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        url = None
        while not self._done.wait(0.5):
            if url is None:
                m = re.search(
                    r"\[demo\] console .*?(http://127\.0\.0\.1:\d+/)", self.out.getvalue()
                )
                url = m.group(1) if m else None
                continue
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    page = r.read().decode()
            except OSError:
                continue
            if 'data-key="GT-102/high"' in page:
                self.saw_leak = True

    def stop(self) -> None:
        self._done.set()
        self._thread.join(5)


def test_the_demo_prints_a_level_1_then_a_level_2_alarm_received_by_the_platform(
    tmp_path: Path,
) -> None:
    out = io.StringIO()
    watcher = _BoardWatcher(out)
    result = run_demo(
        DemoOptions(workdir=tmp_path / "demo", duration_s=25, time_scale=4, leak_start_s=24),
        out=out,
    )
    watcher.stop()
    text = out.getvalue()
    assert watcher.saw_leak, text  # the console's board showed the leak
    assert re.search(r"\[demo\] t=\d+s received: .*telemetry \d+.*active alarms: ", text), text
    assert "DATA " not in text  # telemetry lines only with --verbose
    assert result.agent_exit == 0, text
    assert result.gaps == 0
    raise_lines = [line for line in result.alarms if "GT-102 high RAISE level 1 (major)" in line]
    escalate_lines = [
        line for line in result.alarms if "GT-102 high ESCALATE level 2 (critical)" in line
    ]
    assert raise_lines, text
    assert escalate_lines, text
    assert text.index(raise_lines[0]) < text.index(escalate_lines[0])
    assert "[agent]    safeedge.pipeline alarm tag=GT-102 alarm=high event=raise level=1" in text
    assert result.received.get("telemetry", 0) >= 10
    escalated = "[agent]    safeedge.pipeline alarm tag=GT-102 alarm=high event=escalate level=2"
    assert_refusal_and_replan_shown(text, result, after=escalated)


def assert_refusal_and_replan_shown(text: str, result: DemoResult, *, after: str) -> None:
    """The scripted refusal (LT-102's registers, while GT-102 holds at level 2): logged once,
    a re-plan around it, and a re-plan back to the optimum, all on screen after ``after``."""
    refused = [line for line in text.splitlines() if " modbus_refused " in line]
    assert len(refused) == 1 and result.refusals == 1, text
    assert "device=tank-farm-plc table=holding span=106+2 exception=2 kind=tag" in refused[0]
    assert text.index(after) < text.index(refused[0])
    optimum = result.optimum["tank-farm-plc"]
    plans = [(b, a) for d, b, a in result.replans if d == "tank-farm-plc"]
    assert plans and plans[0][0] == optimum and plans[0][1] > optimum, text
    assert plans[-1][1] == optimum, text  # back to the optimum
    back = f"[demo] re-plan: tank-farm-plc {plans[-1][0]} → {optimum} requests per cycle " \
        "(back to the optimum)"  # fmt: skip
    assert back in text and text.index(refused[0]) < text.index(back), text


def test_the_demo_agent_polls_all_three_drivers_and_the_platform_gets_good_telemetry_from_each(
    tmp_path: Path,
) -> None:
    out = io.StringIO()
    result = run_demo(
        DemoOptions(workdir=tmp_path / "demo", duration_s=12, time_scale=4, leak_start_s=24),
        out=out,
    )
    text = out.getvalue()
    assert result.agent_exit == 0, text
    assert "GT-101" in result.good_tags, text  # Modbus TCP (the tank-farm PLC)
    assert {"GT-301", "GT-302"} <= result.good_tags, text  # serial line (gas controller)
    if shutil.which("socat") is None:
        assert "running without the RTU analyser" in text
    else:
        assert {"AT-201", "AT-202"} <= result.good_tags, text  # Modbus RTU (analyser)


def test_the_demo_without_a_broker_keeps_alarming_and_says_it_buffers(tmp_path: Path) -> None:
    out = io.StringIO()
    result = run_demo(
        DemoOptions(
            workdir=tmp_path / "demo", duration_s=20, time_scale=4, leak_start_s=24, broker=False
        ),
        out=out,
    )
    text = out.getvalue()
    assert result.agent_exit == 0, text
    assert "buffers everything until a broker is reachable" in text
    assert "alarm tag=GT-102 alarm=high event=raise level=1" in text
    assert result.received == {}
    assert_refusal_and_replan_shown(text, result, after="alarm=high event=raise level=1")
