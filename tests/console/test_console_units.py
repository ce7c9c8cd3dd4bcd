"""The console's parts without a browser: config checks, hashes, the add-user command,
language and time, the login limiter, shelved alarm records in a real store, the live table."""

from __future__ import annotations

import io
import json
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from agent.cli import main
from agent.config import ConfigError, loads_config
from agent.console.auth import LoginLimiter, clean
from agent.console.i18n import SiteClock, negotiate
from agent.console.passwords import hash_password, verify_password
from agent.console.readmodel import LiveValues, health, health_from_status
from agent.console.render import health_fragment
from agent.console.render_live import LiveTable
from agent.runtime.alarms import AlarmRecorder
from agent.runtime.alarmstate import AlarmBook
from agent.runtime.shelving import Shelving
from agent.runtime.sink import RecordSink
from agent.runtime.stats import RuntimeStats
from agent.runtime.status import DeviceStatus, StatusSnapshot, UplinkStatus
from agent.tags import TagTable
from buffer import Store
from buffer.record import Stream
from drivers import Quality, SampleBatch, build_devices
from provisioning.simulator import tank_farm_config
from rules import RuleEngine
from rules.events import AlarmEvent

BASE = tank_farm_config(
    modbus_host="127.0.0.1", modbus_port=1502, mqtt_host="127.0.0.1", mqtt_port=1883,
    data_dir="data",
)  # fmt: skip


def _issues(console: str) -> list[str]:
    with pytest.raises(ConfigError) as err:
        loads_config(BASE + "\n[console]\nenabled = true\n" + console)
    return [f"{i.path}: {i.message}" for i in err.value.issues]


def test_a_console_bound_beyond_loopback_without_tls_is_a_config_error() -> None:
    (issue,) = _issues('host = "0.0.0.0"\n')
    assert issue.startswith("console.host:") and "without TLS" in issue
    ok = 'host = "0.0.0.0"\ntls_cert_file = "c.pem"\ntls_key_file = "k.pem"\n'
    cfg = loads_config(BASE + "\n[console]\nenabled = true\n" + ok)
    assert cfg.console.tls and not loads_config(BASE).console.enabled  # off by default


def test_an_unknown_time_zone_a_lone_key_and_a_bad_hash_are_named() -> None:
    issues = _issues(
        'timezone = "Mars/Olympus"\ntls_key_file = "k.pem"\n'
        '[[console.users]]\nname = "op"\npassword_hash = "plain"\n'
    )
    joined = "\n".join(issues)
    assert "console.timezone: unknown time zone 'Mars/Olympus'" in joined
    assert "console.tls_key_file" in joined
    assert 'console.users[0] "op".password_hash: password_hash is not a scrypt hash' in joined


def test_a_scrypt_hash_verifies_only_its_password_and_a_malformed_one_never() -> None:
    encoded = hash_password("correct horse", n=2**10)
    assert encoded.startswith("scrypt$1024$8$1$")
    assert verify_password("correct horse", encoded)
    assert not verify_password("correct hors", encoded)
    assert not verify_password("correct horse", None)  # unknown user: same work, never true
    assert not verify_password("x", "scrypt$1024$8$1$!!$!!")


def test_add_user_prints_an_entry_the_config_accepts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("a long password\n"))
    assert main(["console", "add-user", "shift-lead", "--role", "operator",
                 "--password-stdin"]) == 0  # fmt: skip
    snippet = capsys.readouterr().out
    assert "a long password" not in snippet
    cfg = loads_config(BASE + "\n[console]\nenabled = true\n" + snippet)
    (user,) = cfg.console.users
    assert (user.name, user.role) == ("shift-lead", "operator")
    assert verify_password("a long password", user.password_hash)
    assert tomllib.loads(snippet)["console"]["users"][0]["name"] == "shift-lead"
    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    assert main(["console", "add-user", "x", "--password-stdin"]) == 2


def test_the_language_follows_the_choice_then_the_browser_then_the_config() -> None:
    assert negotiate("en-US,en;q=0.9", None, "zh") == "en"
    assert negotiate("fr-FR,en;q=0.5,zh-CN;q=0.8", None, "en") == "zh"
    assert negotiate("fr-FR", None, "zh") == "zh"
    assert negotiate(None, None, "en") == "en"
    assert negotiate("en", "zh", "en") == "zh"
    assert negotiate("en;q=bogus,zh;q=0", None, "zh") == "zh"


def test_times_are_shown_in_the_site_zone_with_the_utc_offset() -> None:
    ts = 1_796_118_116_000  # 2026-12-01 09:41:56 UTC
    assert SiteClock("Asia/Shanghai").full(ts) == "2026-12-01 17:41:56 (UTC+08:00)"
    assert SiteClock("America/New_York").full(ts) == "2026-12-01 04:41:56 (UTC-05:00)"


def test_logins_are_limited_per_key_within_the_window() -> None:
    now = [0.0]
    lim = LoginLimiter(max_failures=3, window_s=60, clock=lambda: now[0])
    for _ in range(3):
        assert not lim.blocked("ip:a", "user:op")
        lim.failed("ip:a", "user:op")
    assert lim.blocked("ip:b", "user:op") and lim.blocked("ip:a")
    now[0] = 61.0
    assert not lim.blocked("ip:a", "user:op")


def test_browser_text_is_escaped_for_the_log() -> None:
    assert clean("op\n2026 INFO fake line\x1b[31m") == "op\\x0a2026 INFO fake line\\x1b[31m"
    assert clean("x" * 100).endswith("…")


def _alarm_bodies(store: Store) -> list[dict[str, object]]:
    last = store.stats().streams[Stream.ALARM].last_seq
    return [json.loads(r.payload) for r in store.resend(Stream.ALARM, 1, last)]


def test_a_shelved_alarm_is_still_recorded_marked_shelved_until_its_shelf_expires(
    tmp_path: Path,
) -> None:
    cfg = loads_config(BASE)
    tags = TagTable(cfg)
    now = [1_000_000]
    shelving = Shelving(max_s=60, clock_ms=lambda: now[0])
    with pytest.raises(ValueError, match="reason"):
        shelving.shelve(tag="GT-102", alarm="high", user="op", reason=" ", duration_s=10)
    with pytest.raises(ValueError, match="at most 60"):
        shelving.shelve(tag="GT-102", alarm="high", user="op", reason="cal", duration_s=61)
    with Store.open(path=tmp_path / "b.db", key_file=tmp_path / "k", gateway_id="GW1") as store:
        sink = RecordSink(store=store, stats=RuntimeStats(), clock_ms=lambda: now[0],
                          wake=lambda: None)  # fmt: skip
        book = AlarmBook(gateway="GW1", tags=tags, engine=RuleEngine(tags.names, cfg.rules))
        rec = AlarmRecorder(tags=tags, book=book, sink=sink, stats=RuntimeStats())
        rec.shelving = shelving
        seen: list[int] = []
        rec.observers.append(lambda events: seen.append(len(events)))
        gt102 = tags.index["GT-102"]
        shelving.shelve(tag="GT-102", alarm="high", user="op", reason="cal", duration_s=10)
        rec.record([AlarmEvent(now[0], gt102, "high", "raise", 1, 30.0, {"limit": 25.0})])
        rec.record([AlarmEvent(now[0], tags.index["GT-101"], "high", "raise", 1, 30.0)])
        now[0] += 10_000
        assert [(s.tag, s.alarm) for s in shelving.expire()] == [("GT-102", "high")]
        rec.record([AlarmEvent(now[0], gt102, "high", "clear", 0, 3.0)])
        bodies = _alarm_bodies(store)
    assert [(b["tag"], b["event"], b.get("shelved")) for b in bodies] == [
        ("GT-102", "raise", True), ("GT-101", "raise", None), ("GT-102", "clear", None)
    ]  # fmt: skip
    assert seen == [1, 1, 1]


def test_a_bad_value_is_shown_as_its_quality_never_as_a_number() -> None:
    cfg = loads_config(BASE)
    tags = TagTable(cfg)
    (device,) = build_devices(cfg.devices[0], tag_index=tags.index, serial_ports={})
    live = LiveValues(tags=tags, span_s=60)
    i, j = tags.index["GT-101"], tags.index["GT-102"]
    batch = SampleBatch(
        np.array([i, j], dtype=np.int32), np.array([1_796_118_116_000] * 2, dtype=np.int64),
        np.array([12.5, 47.25]), np.array([Quality.GOOD, Quality.BAD_COMM], dtype=np.uint8),
    )  # fmt: skip
    live.on_batch(device, batch)
    table = LiveTable(live=live, tags=tags, limits=lambda k: {"high": 25.0},
                      clock=SiteClock("Asia/Shanghai"))  # fmt: skip
    html = table.render("en")
    good = html.split('data-tag="GT-101"')[1].split("</tr>")[0]
    bad = html.split('data-tag="GT-102"')[1].split("</tr>")[0]
    assert '<td class="v">12.5</td>' in good and "H 25" in good
    assert '<td class="v">bad</td>' in bad and "bad_comm" in bad and "47" not in bad


def test_health_names_a_silent_device_with_its_bad_samples_and_the_uplink_state() -> None:
    cfg = loads_config(BASE)
    tags = TagTable(cfg)
    (device,) = build_devices(cfg.devices[0], tag_index=tags.index, serial_ports={})
    live = LiveValues(tags=tags, span_s=60)
    idx = np.array([tags.index["GT-101"], tags.index["GT-102"]], dtype=np.int32)
    batch = SampleBatch(idx, np.array([1, 1], dtype=np.int64), np.array([np.nan, np.nan]),
                        np.array([Quality.BAD_COMM] * 2, dtype=np.uint8))  # fmt: skip
    live.on_batch(device, batch)  # not connected: the driver reports it offline
    h = health(
        devices=[device], seen=live.online, problems=live.problems,
        backlog={"alarm": 3}, uplink_connected=False, config_hash="abc",
        append_failures=0, polls=1,
    )  # fmt: skip
    assert h.devices == [("tank-farm-plc", False, "no answer; bad_comm ×2")]
    assert h.degraded == [
        "device tank-farm-plc: no answer; bad_comm ×2",
        "uplink disconnected: records are kept in the buffer",
    ]
    assert health_fragment(h, lang="zh").count("已断开") == 1


def test_a_lost_device_shows_the_drivers_reason_beside_its_bad_samples() -> None:
    cfg = loads_config(BASE)
    tags = TagTable(cfg)
    (device,) = build_devices(cfg.devices[0], tag_index=tags.index, serial_ports={})
    live = LiveValues(tags=tags, span_s=60)
    idx = np.array([tags.index["GT-101"]], dtype=np.int32)
    batch = SampleBatch(idx, np.array([1], dtype=np.int64), np.array([np.nan]),
                        np.array([Quality.BAD_COMM], dtype=np.uint8))  # fmt: skip
    device.lost_reason = "timeout"  # what the driver sets when it loses the device
    live.on_batch(device, batch)
    assert live.problems["tank-farm-plc"] == "bad_comm ×1, lost: timeout"
    device.lost_reason = ""
    live.on_batch(device, batch)
    assert live.problems["tank-farm-plc"] == "bad_comm ×1"


def test_health_from_the_status_snapshot_names_the_drivers_reason_and_the_run_degraded() -> None:
    snap = StatusSnapshot(
        ts_ms=1, agent="x", site="S1", gateway="G1", config_hash="abc", uptime_s=5.0,
        degraded=["config rejected at reload: bad key"],
        devices=[
            DeviceStatus(name="plc", driver="ModbusDevice", state="offline",
                         last_error="no reply within 0.5 s", last_error_reason="timeout"),
            DeviceStatus(name="gas", driver="SerialLineDevice", state="online"),
        ],
        alarms=[], buffer=None, uplink=UplinkStatus(state="disconnected"), polls=3,
    )  # fmt: skip
    h = health_from_status(snap, problems={"gas": "bad_device ×1"})
    assert h.devices == [
        ("plc", False, "timeout: no reply within 0.5 s"),
        ("gas", True, "bad_device ×1"),
    ]
    assert h.degraded == [
        "device plc: timeout: no reply within 0.5 s",
        "device gas: bad_device ×1",
        "uplink disconnected: records are kept in the buffer",
        "config rejected at reload: bad key",
    ]
    assert (h.uplink, h.config_hash, h.polls) == ("disconnected", "abc", 3)
