"""Every event kind of design/UPLINK.md has a schema: a well-formed example passes, a broken one
is named at its field (the emitters live in other modules; this is their contract)."""

from __future__ import annotations

import json

import pytest

from agent.codec import encode_envelope, event_body
from central.schema import SchemaValidator

# fmt: off
GOOD: dict[str, dict[str, object]] = {
    "seq_gap": {"stream": "telemetry", "from_seq": 10, "to_seq": 12, "reason": "power_loss"},
    "telemetry_refused": {"count": 3, "first_ts": 1, "last_ts": 2, "reason": "disk_full"},
    # the three below have the shape agent/runtime (reload.py, health.py) emits
    "config_applied": {"old_hash": "ab12", "new_hash": "cd34", "changed": ["devices.plc"],
                       "mode": "restart", "changes": ["devices[0].host"]},
    "config_rejected": {
        "hash": "ef56", "config_hash": "ef56",
        "errors": ["agent.toml: uplink.port: must be <= 65535 (hint: fix it)"],
        "running_hash": "cd34",
    },
    "health": {"interval_s": 60, "counters": {"polls": 10}, "gauges": {"backlog": 0.0},
               "uptime_s": 120.0, "config_hash": "cd34", "degraded": [],
               "devices": [{"name": "plc", "state": "online"}], "alarms_active": 0,
               "buffer": {"streams": {}, "bytes": 0, "capacity_bytes": 1},
               "uplink": {"state": "connected", "session": 1}},
    "commands_dropped": {"count": 5, "reason": "queue_full"},
    "output_written": {"output": "siren", "device": "plc", "table": "coil", "address": 3,
                       "value": 1, "alarm": True, "heartbeat": False, "ok": True, "reason": ""},
    "output_failed": {"output": "siren", "device": "plc", "table": "coil", "address": 3,
                      "value": 1, "alarm": True, "heartbeat": False, "ok": False,
                      "reason": "exception:2"},
    "commissioned": {"digest": "0" * 64, "result": "go", "config_hash": "ab", "installer": "x",
                     "counts": {"PASS": 3}, "failed": []},
    "device_lost": {"device": "plc", "at_ms": 5, "reason": "timeout"},
    "device_restored": {"device": "plc", "at_ms": 9, "outage_ms": 4},
    "buffer_corrupt": {
        "moved_to": "x.db.corrupt",
        "salvaged": 9,
        "undelivered_lost": 1,
        "delivered_lost": 0,
    },
}
# fmt: on

BAD: list[tuple[str, dict[str, object], str]] = [
    ("seq_gap", {**GOOD["seq_gap"], "reason": "gremlins"}, "body/reason"),
    ("seq_gap", {"stream": "telemetry", "from_seq": 1, "reason": "power_loss"}, "'to_seq'"),
    ("telemetry_refused", {**GOOD["telemetry_refused"], "count": 0}, "body/count"),
    ("config_rejected", {"hash": "x", "errors": []}, "body/errors"),
    ("health", {"counters": {}}, "'interval_s'"),
    ("output_failed", {k: v for k, v in GOOD["output_failed"].items() if k != "ok"}, "'ok'"),
    ("commissioned", {**GOOD["commissioned"], "result": "maybe"}, "body/result"),
    ("device_restored", {"device": "plc", "at_ms": 9, "outage_ms": -1}, "body/outage_ms"),
    ("buffer_corrupt", {**GOOD["buffer_corrupt"], "salvaged": -1}, "body/salvaged"),
]


def _payload(kind: str, fields: dict[str, object]) -> bytes:
    return encode_envelope(
        site="S1", gateway="G1", stream="event", seq=1, ts_ms=1, backfill=False,
        body=event_body(kind, 1, fields),
    )  # fmt: skip


@pytest.fixture(scope="module")
def validator() -> SchemaValidator:
    return SchemaValidator()


@pytest.mark.parametrize("kind", sorted(GOOD))
def test_a_well_formed_event_of_each_kind_is_valid(validator: SchemaValidator, kind: str) -> None:
    assert validator.errors("event", _payload(kind, GOOD[kind])) == []


@pytest.mark.parametrize(("kind", "fields", "where"), BAD, ids=[f"{b[0]}-{b[2]}" for b in BAD])
def test_a_broken_event_is_reported_at_its_field(
    validator: SchemaValidator, kind: str, fields: dict[str, object], where: str
) -> None:
    errors = validator.errors("event", _payload(kind, fields))
    assert errors and any(where in e for e in errors), errors


def test_every_kind_listed_in_the_contract_has_a_schema_entry() -> None:
    from agent.schemas import load_schemas

    doc = load_schemas()["event"]
    kinds: set[str] = set()
    for entry in doc["allOf"]:
        k = entry["if"]["properties"]["kind"]
        kinds.update([k["const"]] if "const" in k else k["enum"])
    assert set(GOOD) <= kinds, sorted(set(GOOD) - kinds)
    json.dumps(doc)  # plain JSON (served to platform teams as is)
