"""Policies decide what leaves the site: raw, statistics or nothing; precision ends float noise.

Built from real config text through the real config checks (tests/agent/runtime/conftest.py:
tags T1, T2 on plc-a, L-3 on plc-b, rules on T1).
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pytest

from agent.codec_v2 import decode_stats, decode_telemetry_v2
from agent.config import ConfigError
from agent.runtime.meta import meta_payload
from central.schema import SchemaValidator
from tests.agent.runtime.conftest import NOW, make_components

POLICY = """
[uplink.policy]
internal = "raw"
confidential = "local_only"

[[uplink.tags]]
tags = ["T2"]
class = "confidential"

[[uplink.tags]]
match = "L-*"
policy = "stats"
window_s = 60
precision = 1
codes = { equipment = "T-101", target = "LEVEL", bit_no = "L-3" }

[[uplink.tags]]
tags = ["T1"]
precision = 2
"""

T1, T2, L3 = 0, 1, 2


def _poll(c, ts: int, values: list[float]):  # type: ignore[no-untyped-def]
    tag = np.array([T1, T2, L3], dtype=np.int32)
    return c.shaper.add(tag, np.full(3, ts, np.int64), np.array(values), np.zeros(3, np.uint8), ts)


def test_raw_stats_and_local_only_tags_each_get_what_their_policy_says(tmp_path: Path) -> None:
    c = make_components(tmp_path, uplink_extra=POLICY)
    minute = NOW - NOW % 60_000
    bodies = _poll(c, minute + 1_000, [2.3000000000000003, 5.0, 10.04])
    bodies += _poll(c, minute + 2_000, [2.0 + 0.1 + 0.2, 6.0, 10.06])
    (first, second) = bodies
    assert first == f'{{"t0":{minute + 1000},"at":[[0,{{"T1":2.3}}]]}}'.encode()
    assert [p.value for p in decode_telemetry_v2(second)] == [2.3]  # 2.3000000000000003
    # T2 (confidential -> local_only) is nowhere; L-3's window closes at the minute.
    (stats,) = c.shaper.due(minute + 60_000)
    window, rows = decode_stats(stats)
    assert window == 60_000
    assert [tuple(r) for r in rows] == [("L-3", minute, 2, 10.0, 10.1, 10.1, 10.1, 0)]
    assert b"T2" not in first + second + stats


def test_meta_lists_class_policy_window_precision_and_codes(tmp_path: Path) -> None:
    gw = '\n[gateway.codes]\nenterprise = "91320500MA1EXAMPLE"\nhazard_source = "HZ-1"\n'
    c = make_components(tmp_path, uplink_extra=POLICY, extra=gw)
    payload = meta_payload(
        tags=c.tags,
        engine=c.engine,
        devices=c.devices,
        agent_version="x",
        config_hash=c.config_hash,
        ts_ms=NOW,
        policies=c.policies,
        codes={"enterprise": "91320500MA1EXAMPLE", "hazard_source": "HZ-1"},
    )
    assert SchemaValidator().errors("meta", payload) == []
    doc = msgspec.json.decode(payload)
    assert doc["codes"] == {"enterprise": "91320500MA1EXAMPLE", "hazard_source": "HZ-1"}
    by = {t["name"]: t for t in doc["tags"]}
    assert (by["T1"]["class"], by["T1"]["policy"], by["T1"]["precision"]) == ("internal", "raw", 2)
    assert (by["T2"]["class"], by["T2"]["policy"]) == ("confidential", "local_only")
    assert by["L-3"]["policy"] == "stats" and by["L-3"]["window_ms"] == 60_000
    assert by["L-3"]["codes"] == {
        "enterprise": "91320500MA1EXAMPLE",
        "hazard_source": "HZ-1",
        "equipment": "T-101",
        "target": "LEVEL",
        "bit_no": "L-3",
    }


@pytest.mark.parametrize(
    ("extra", "path", "words"),
    [
        (
            '[[uplink.tags]]\ntags = ["T1"]\npolicy = "local_only"\n',
            "uplink.tags[0].policy",
            "'T1' has alarm rules but its policy is local_only",
        ),
        (
            '[uplink.policy]\nconfidential = "local_only"\n[[uplink.tags]]\nmatch = "T*"\n'
            'class = "confidential"\n',
            "uplink.tags[0].class",
            "its alarms must always reach the platform",
        ),
        (
            '[[uplink.tags]]\ntags = ["T2"]\npolicy = "stats"\nwindow_s = 7\n',
            "uplink.tags[0].window_s",
            "must be 1 s .. 1 day and divide a day",
        ),
        ('[[uplink.tags]]\ntags = ["T9"]\n', "uplink.tags[0].tags[0]", "unknown tag 'T9'"),
        ('[[uplink.tags]]\nmatch = "Q*"\n', "uplink.tags[0].match", "matches no tag"),
        (
            '[[uplink.tags]]\ntags = ["T2"]\ncodes = { target = "has space" }\n',
            "uplink.tags[0].codes.target",
            "without spaces",
        ),
    ],
)
def test_governance_mistakes_are_config_errors_with_their_key_path(
    tmp_path: Path, extra: str, path: str, words: str
) -> None:
    with pytest.raises(ConfigError) as info:
        make_components(tmp_path, uplink_extra=extra)
    assert any(i.path == path and words in i.message for i in info.value.issues), str(info.value)


def test_body_1_keeps_v1_points(tmp_path: Path) -> None:
    c = make_components(tmp_path, uplink_extra="telemetry_body = 1\n")
    (body,) = _poll(c, NOW, [1.0, 2.0, 3.0])
    assert body.startswith(b'{"points":[["T1",')


def test_the_exact_integer_hook_reaches_body_v2_through_policy_and_deadband(
    tmp_path: Path,
) -> None:
    c = make_components(tmp_path, uplink_extra=POLICY)
    tag = np.array([T1, T2, L3], dtype=np.int32)
    exact = {0: 2**62 + 1, 1: 7}  # positions of T1 and T2
    (body,) = c.shaper.add(
        tag, np.full(3, NOW, np.int64), np.array([4.6e18, 7.0, 1.0]), np.zeros(3, np.uint8),
        NOW, exact,
    )  # fmt: skip
    assert msgspec.json.decode(body)["at"][0][1] == {"T1": 2**62 + 1}  # T2 local_only, L-3 stats
