"""The console in a real browser (Debian's chromium, headless, through chromium-driver) against
a running agent, the tank-farm simulator and a real Mosquitto whose subscriber plays the
platform. One scenario, in the order a shift lives it: log in, a leak raises level 1 then level
2, the operator acknowledges and shelves it, the shelf expires, the uplink goes down.

Artefacts: screenshots of the board and the live values go to ``$SAFEEDGE_ARTEFACTS`` (default:
the test's tmp dir); docs/screenshots/ holds a committed copy from one run.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from agent.uplink.encoding import decode_payload
from tests.console.site import PASSWORD, Site, WebClient
from tests.support.mosquitto import Broker, Received, Subscriber

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = "safeedge/v1/DEMO/GW1"


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--window-size=1400,1000",
        "--lang=zh-CN",
        "--autoplay-policy=no-user-gesture-required",
    ):
        opts.add_argument(arg)
    opts.add_experimental_option("prefs", {"intl.accept_languages": "zh-CN,zh"})
    driver = webdriver.Chrome(options=opts, service=Service("/usr/bin/chromedriver"))
    yield driver
    driver.quit()


def _until(what: str, cond: Callable[[], object], timeout_s: float = 30.0) -> object:
    deadline = time.monotonic() + timeout_s
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _row(driver: WebDriver, css: str) -> object:
    return driver.find_elements(By.CSS_SELECTOR, css)


def _body(m: Received) -> dict[str, object]:
    body = json.loads(decode_payload(m.payload))["body"]  # the demo site sends zlib
    assert isinstance(body, dict)
    return body


def _latency_ms(driver: WebDriver) -> int:
    """From the board's change (the alarm record stored) to the page showing it."""
    shown = int(driver.execute_script("return Number(document.body.dataset.updatedMs)"))
    changed = int(driver.find_element(By.ID, "board").get_attribute("data-changed-ms") or 0)
    return shown - changed


def test_a_shift_on_the_console_board_ack_shelve_expiry_and_uplink_down(
    tmp_path: Path, browser: WebDriver
) -> None:
    art = Path(os.environ.get("SAFEEDGE_ARTEFACTS", tmp_path / "artefacts"))
    art.mkdir(parents=True, exist_ok=True)
    broker = Broker(tmp_path / "broker")
    broker.start()
    site = Site(tmp_path, mqtt_port=broker.port, console={"sparkline_s": 60})
    try:
        with Subscriber(broker, f"{ROOT}/#") as platform:
            _scenario(site, broker, platform, browser, art)
    finally:
        site.stop()
        broker.kill()


def _scenario(
    site: Site, broker: Broker, platform: Subscriber, driver: WebDriver, art: Path
) -> None:
    # not logged in: the board (no anonymous board configured) asks for a login
    driver.get(site.url)
    assert "/login" in driver.current_url
    driver.find_element(By.NAME, "user").send_keys("op")
    driver.find_element(By.NAME, "password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "#login button").click()
    _until("the board", lambda: _row(driver, "#board"))
    assert driver.find_element(By.ID, "who").text.startswith("op")
    platform.wait_for(
        lambda m: m.topic.endswith("/event")
        and _body(m)["kind"] == "console_login"
        and _body(m)["user"] == "op",
        timeout_s=10,
    )

    site.start_simulator(leak_start_s=4, time_scale=2)  # level 1 at ~7 s, level 2 at ~11 s
    l1 = 'tr.alarm.l1.unacked[data-key="GT-102/high"]'
    _until("the level-1 alarm", lambda: _row(driver, l1), 40)
    first = _latency_ms(driver)
    badge = driver.find_element(By.CSS_SELECTOR, f"{l1} .badge").text
    assert badge == "一级"
    l2 = 'tr.alarm.l2.unacked[data-key="GT-102/high"]'
    _until("the level-2 alarm", lambda: _row(driver, l2), 20)
    second = _latency_ms(driver)
    assert driver.find_element(By.CSS_SELECTOR, f"{l2} .badge").text == "二级"
    print(f"board latency after the record was stored: raise {first} ms, escalate {second} ms")
    assert 0 <= first <= 1000 and 0 <= second <= 1000
    _until("the sound cue", lambda: driver.execute_script("return document.body.dataset.cues"))
    driver.save_screenshot(str(art / "board.png"))

    # a viewer may look but not act; nobody acts without the CSRF token
    viewer = WebClient(site.url)
    assert viewer.login("view") == 200
    token = viewer.csrf("/")
    status, _ = viewer.post("ack", {"csrf": token, "tag": "GT-102", "alarm": "high"})
    assert status == 403
    op_http = WebClient(site.url)
    assert op_http.login("op") == 200
    status, text = op_http.post("ack", {"tag": "GT-102", "alarm": "high"})
    assert status == 403 and "CSRF" in text
    wrong = WebClient(site.url)
    assert wrong.login("op", "wrong password") == 401

    # the operator acknowledges on the board: the ack goes upstream with who and why
    driver.find_element(By.CSS_SELECTOR, f'{l2} input[name="comment"]').send_keys("现场确认")
    driver.find_element(By.CSS_SELECTOR, f"{l2} button.ack").click()
    acked = 'tr.alarm.l2[data-key="GT-102/high"]:not(.unacked)'
    _until("the acknowledged row", lambda: _row(driver, acked), 5)
    ack = platform.wait_for(
        lambda m: m.topic.endswith("/alarm") and _body(m)["event"] == "ack", timeout_s=10
    )
    body = _body(ack)
    assert (body["tag"], body["user"], body["source"], body["comment"]) == (
        "GT-102",
        "op",
        "local",
        "现场确认",
    )
    assert "op" in driver.find_element(By.CSS_SELECTOR, "tr.h.ack td.who").text

    # shelving hides it from the board; its records still go upstream, marked shelved
    row = driver.find_element(By.CSS_SELECTOR, acked)
    row.find_element(By.NAME, "reason").send_keys("传感器标定")
    minutes = row.find_element(By.NAME, "minutes")
    minutes.clear()
    minutes.send_keys("0.25")  # 15 s: the leak falls back meanwhile
    row.find_element(By.CSS_SELECTOR, "button.shelve").click()
    _until("the shelf", lambda: _row(driver, 'li.shelf[data-key="GT-102/high"]'), 5)
    assert not _row(driver, 'tr.alarm[data-key="GT-102/high"]')
    shelved = platform.wait_for(
        lambda m: m.topic.endswith("/event") and _body(m)["kind"] == "alarm_shelved", timeout_s=10
    )
    assert (_body(shelved)["user"], _body(shelved)["reason"]) == ("op", "传感器标定")
    marked = platform.wait_for(
        lambda m: m.topic.endswith("/alarm") and _body(m).get("shelved") is True, timeout_s=20
    )
    assert _body(marked)["tag"] == "GT-102"
    platform.wait_for(
        lambda m: m.topic.endswith("/event")
        and _body(m)["kind"] == "alarm_unshelved"
        and _body(m)["reason"] == "expired",
        timeout_s=25,
    )
    _until("the shelf gone", lambda: not _row(driver, "li.shelf"), 5)

    # live values, then the uplink goes down: the console keeps working
    driver.get(site.url + "live")
    _until("live values", lambda: _row(driver, 'tr.good[data-tag="GT-102"] svg polyline'), 10)
    driver.save_screenshot(str(art / "live.png"))
    broker.kill()
    driver.get(site.url + "health")
    _until("uplink down on the health page", lambda: _row(driver, "#uplink.disconnected"), 15)
    driver.get(site.url)
    _until("the board without the uplink", lambda: _row(driver, "#board"), 5)
    before = driver.find_element(By.ID, "board").get_attribute("data-version")
    status, _ = op_http.post(
        "shelve",
        {
            "csrf": op_http.csrf("/"),
            "tag": "GT-101",
            "alarm": "high",
            "reason": "test",
            "minutes": "1",
        },
    )
    assert status == 200
    _until(
        "a board update while the uplink is down",
        lambda: driver.find_element(By.ID, "board").get_attribute("data-version") != before,
        5,
    )
