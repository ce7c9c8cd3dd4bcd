"""The wire codec produces exactly the bytes of design/UPLINK.md and decodes them back."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.codec import (
    Alarm,
    CodecError,
    Point,
    alarm_body,
    decode_alarm,
    decode_envelope,
    decode_event,
    decode_state,
    decode_telemetry,
    encode_envelope,
    event_body,
    root_topic,
    state_payload,
    telemetry_body,
)

NAN = float("nan")


def envelope(**kw: object) -> bytes:
    args: dict[str, object] = {
        "site": "S1",
        "gateway": "G1",
        "stream": "alarm",
        "seq": 1042,
        "ts_ms": 1764300000123,
        "backfill": False,
        "body": b'{"a":1}',
    }
    args.update(kw)
    return encode_envelope(**args)  # type: ignore[arg-type]


def test_the_root_topic_is_prefix_site_gateway() -> None:
    assert root_topic("safeedge/v1", "S1", "G-1.a_b") == "safeedge/v1/S1/G-1.a_b"


@pytest.mark.parametrize(
    ("prefix", "site", "gateway"),
    [
        ("safeedge/v1", "S/1", "G1"),
        ("safeedge/v1", "S1", "G+"),
        ("safeedge/v1", "S1", ""),
        ("safeedge/v1", "S1", "x" * 65),
        ("safeedge/#", "S1", "G1"),
        ("safeedge/v1/", "S1", "G1"),
        ("", "S1", "G1"),
    ],
)
def test_a_root_topic_with_wildcards_slashes_or_bad_ids_is_refused(
    prefix: str, site: str, gateway: str
) -> None:
    with pytest.raises(ValueError, match="prefix|site|gateway"):
        root_topic(prefix, site, gateway)


def test_the_envelope_has_the_contract_key_order_and_the_body_verbatim() -> None:
    body = b'{"z": 1,  "a": [1, 2]}'  # spacing and key order are kept byte for byte
    data = envelope(body=body)
    assert data == (
        b'{"v":1,"site":"S1","gw":"G1","stream":"alarm","seq":1042,"id":"G1/alarm/1042",'
        b'"ts":1764300000123,"backfill":false,"body":' + body + b"}"
    )
    assert list(json.loads(data)) == [
        "v", "site", "gw", "stream", "seq", "id", "ts", "backfill", "body",
    ]  # fmt: skip


def test_the_same_record_always_gets_the_same_id() -> None:
    a = decode_envelope(envelope(stream="telemetry", seq=7, backfill=True))
    b = decode_envelope(envelope(stream="telemetry", seq=7, backfill=False, ts_ms=1))
    assert a.id == b.id == "G1/telemetry/7"
    assert a.backfill is True


def test_an_envelope_decodes_back_to_its_fields_and_raw_body() -> None:
    env = decode_envelope(envelope())
    assert (env.v, env.site, env.gw, env.stream, env.seq, env.ts) == (
        1, "S1", "G1", "alarm", 1042, 1764300000123,
    )  # fmt: skip
    assert bytes(env.body) == b'{"a":1}'


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"not json", "malformed"),
        (b"[]", "malformed"),
        (envelope().replace(b'"v":1', b'"v":2'), "version 2"),
        (envelope().replace(b'"id":"G1/alarm/1042"', b'"id":"G1/alarm/1"'), "does not match"),
        (envelope(stream="logs"), "unknown stream"),
        (envelope(seq=0), "seq 0"),
        (envelope(body=b"{nope"), "malformed"),
        (envelope().replace(b',"backfill":false', b""), "backfill"),
        (envelope()[:-1] + b',"extra":1}', "extra"),
    ],
)
def test_a_malformed_envelope_raises_a_codec_error_saying_what_is_wrong(
    data: bytes, match: str
) -> None:
    with pytest.raises(CodecError, match=match):
        decode_envelope(data)


def test_telemetry_points_omit_good_quality_and_write_unreadable_values_as_null() -> None:
    body = telemetry_body(
        [
            ("GT-101", 1000, 20.5, None),
            ("GT-102", 1000, None, "bad_comm"),
            ("GT-103", 1000, NAN, "bad_device"),
            ("GT-104", 1001, float("inf"), "good"),
            ("GT-105", 1002, 3.0, "stale"),
        ]
    )
    assert body == (
        b'{"points":[["GT-101",1000,20.5],["GT-102",1000,null,"bad_comm"],'
        b'["GT-103",1000,null,"bad_device"],["GT-104",1001,null],["GT-105",1002,3.0,"stale"]]}'
    )


def test_non_ascii_tag_names_are_written_as_utf8_and_read_back() -> None:
    body = telemetry_body([("甲烷-1#", 5, 0.8, None), ("Ölstand", 6, -NAN, "bad_range")])
    assert "甲烷-1#".encode() in body
    assert b"\\u" not in body
    assert decode_telemetry(body) == [
        Point("甲烷-1#", 5, 0.8, None),
        Point("Ölstand", 6, None, "bad_range"),
    ]


@given(
    st.lists(
        st.tuples(
            st.text(min_size=1, max_size=20),
            st.integers(min_value=0, max_value=2**53),
            st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
            st.sampled_from([None, "bad_comm", "bad_device", "bad_range", "stale"]),
        ),
        max_size=30,
    )
)
def test_telemetry_round_trips_with_non_finite_values_as_none(
    points: list[tuple[str, int, float | None, str | None]],
) -> None:
    expected = [
        Point(t, ts, v if v is not None and math.isfinite(v) else None, q) for t, ts, v, q in points
    ]
    assert decode_telemetry(telemetry_body(points)) == expected


@pytest.mark.parametrize(
    "body",
    [b'{"points":[["a",1]]}', b'{"points":[[1,1,1.0]]}', b'{"points":[["a",1,"x"]]}', b"{}"],
)
def test_malformed_telemetry_raises_a_codec_error(body: bytes) -> None:
    with pytest.raises(CodecError):
        decode_telemetry(body)


def test_an_alarm_body_has_the_rules_fields_then_extra_then_id_and_severity() -> None:
    body = alarm_body(
        tag="GT-102",
        alarm="high",
        event="raise",
        level=1,
        value=25.4,
        ts_ms=1764300000123,
        alarm_id="G1:GT-102:high:1764300000123",
        extra={"limit": 25.0},
    )
    assert body == (
        b'{"ts_ms":1764300000123,"tag":"GT-102","alarm":"high","event":"raise","level":1,'
        b'"value":25.4,"limit":25.0,"alarm_id":"G1:GT-102:high:1764300000123",'
        b'"severity":"major"}'
    )
    assert decode_alarm(body) == Alarm(
        ts_ms=1764300000123,
        tag="GT-102",
        alarm="high",
        event="raise",
        level=1,
        value=25.4,
        alarm_id="G1:GT-102:high:1764300000123",
        severity="major",
        extra={"limit": 25.0},
    )


@pytest.mark.parametrize(("level", "severity"), [(2, "critical"), (1, "major"), (0, "normal")])
def test_severity_follows_the_level_after_the_event(level: int, severity: str) -> None:
    body = alarm_body(
        tag="CH4", alarm="high", event="clear", level=level, value=NAN, ts_ms=1,
        alarm_id="x", extra={},
    )  # fmt: skip
    doc = json.loads(body)
    assert doc["severity"] == severity
    assert doc["value"] is None


def test_a_fault_alarm_carries_its_reason_and_a_nan_extra_becomes_null() -> None:
    body = alarm_body(
        tag="O2", alarm="fault", event="raise", level=1, value=None, ts_ms=1, alarm_id="x",
        extra={"reason": "nan", "eta_s": NAN},
    )  # fmt: skip
    doc = json.loads(body)
    assert (doc["reason"], doc["eta_s"], doc["value"]) == ("nan", None, None)


def test_alarm_extra_fields_may_not_overwrite_fixed_fields_and_levels_stay_in_range() -> None:
    kw: dict[str, object] = {
        "tag": "T", "alarm": "high", "event": "raise", "value": 1.0, "ts_ms": 1, "alarm_id": "x",
    }  # fmt: skip
    with pytest.raises(ValueError, match="severity"):
        alarm_body(level=1, extra={"severity": "minor"}, **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="level 3"):
        alarm_body(level=3, extra={}, **kw)  # type: ignore[arg-type]


def test_a_malformed_alarm_body_raises_a_codec_error() -> None:
    with pytest.raises(CodecError, match="severity"):
        decode_alarm(b'{"ts_ms":1,"tag":"T","alarm":"high","event":"raise","level":1,'
                     b'"value":1.0,"alarm_id":"x","severity":"minor"}')  # fmt: skip


def test_an_event_body_is_kind_and_ts_then_its_fields_in_order() -> None:
    body = event_body(
        "buffer_evicted",
        99,
        {"stream": "telemetry", "count": 12, "first_ts": 1, "last_ts": 9, "ratio": NAN},
    )
    assert body == (
        b'{"kind":"buffer_evicted","ts":99,"stream":"telemetry","count":12,"first_ts":1,'
        b'"last_ts":9,"ratio":null}'
    )
    assert decode_event(body)["count"] == 12
    with pytest.raises(ValueError, match="ts"):
        event_body("started", 1, {"ts": 2})
    with pytest.raises(CodecError, match="kind"):
        decode_event(b'{"ts": 1}')


def test_the_state_payload_matches_the_contract_and_decodes_back() -> None:
    data = state_payload(online=True, ts_ms=5, session=3, agent_version="0.1.0")
    assert data == b'{"online":true,"ts":5,"session":3,"agent":"0.1.0"}'
    state = decode_state(data)
    assert (state.online, state.ts, state.session, state.agent) == (True, 5, 3, "0.1.0")
    with pytest.raises(CodecError, match="online"):
        decode_state(b'{"ts":5,"session":3,"agent":"0.1.0"}')


def test_a_command_result_has_the_contract_fields_and_decodes_back() -> None:
    from agent.codec import cmd_result_payload, decode_cmd_result

    data = cmd_result_payload(id=None, status="rejected", detail="malformed: x", ts_ms=5)
    assert data == b'{"id":null,"status":"rejected","detail":"malformed: x","ts":5}'
    assert decode_cmd_result(data).status == "rejected"
    with pytest.raises(CodecError, match="cmd/result"):
        decode_cmd_result(b'{"id": "a", "status": "maybe", "detail": "", "ts": 1}')


def test_the_asyncapi_document_refers_only_to_schemas_that_exist_and_covers_every_topic() -> None:
    import re
    from pathlib import Path

    repo = Path(__file__).parents[2]
    text = (repo / "docs" / "asyncapi.yaml").read_text()
    assert text.startswith("asyncapi: 3.0.0\n")
    # the schemas ship as package data (agent/schemas); the document links there
    refs = set(re.findall(r"\$ref: '\.\./agent/schemas/([a-z_]+\.json)'", text))
    assert refs == {p.name for p in (repo / "agent" / "schemas").glob("*.json")}
    addresses = set(re.findall(r"address: '\{prefix\}/\{site\}/\{gateway\}/([a-z/]+)'", text))
    assert addresses == {"state", "meta", "telemetry", "alarm", "event", "cmd", "cmd/result"}


def test_an_exact_64_bit_integer_is_written_and_read_back_digit_for_digit() -> None:
    big, top = -9007199254740993, 2**64 - 1  # not representable as float64
    body = telemetry_body([("i64", 1, big, None), ("u64", 1, top, None), ("f", 1, 2.0, None)])
    assert b"-9007199254740993" in body and b"18446744073709551615" in body
    values = [p.value for p in decode_telemetry(body)]
    assert values == [big, top, 2.0]
    assert [type(v) for v in values] == [int, int, float]
