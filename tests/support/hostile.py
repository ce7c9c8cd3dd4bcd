"""Hostile ``R/cmd`` traffic: mutated commands as an attacker or a fuzzer sends them.

:func:`mutants` yields :class:`Mutant` messages from a seeded generator over these families
(each a few percent of the mix): random bytes, truncated signed commands, deep JSON (outside
and inside a signed payload), huge JSON (below and above the size cap), extreme numbers,
Unicode edge cases (lone surrogates, separators, bidi overrides, ESC, NUL, invalid UTF-8),
valid signatures over garbage, replays of a command already sent, wrong types, log-forging
ids, and plain valid pings. ``id`` is the id the agent must echo when it answers (None when
the message carries none it can read); ``ok`` is True only for a fresh valid command.

Used by tests/agent/test_commands_hostile.py and benchmarks/soak_commands.py.
"""

from __future__ import annotations

import base64
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = ["FORGED_ID", "Mutant", "mutants", "signed_raw"]

FORGED_ID = "x\n2026-01-01 00:00:00,000 CRITICAL FAKE\u001b[2J"
_UNICODE = [
    "\\ud800",  # a lone surrogate, as a JSON escape
    "\\udfff\\ud800",
    "\u2028\u2029",
    "\u202e\u2066",
    "\u001b[31m\u001b]0;title\u0007",  # raw control characters: not valid JSON
    "\\u001b[2J\\u001b]0;title\\u0007",  # the same as JSON escapes: valid
    "\\u0000",
    "\ufeff",
    "𝕊𝔸𝔽𝔼",
    "\u0085",
]
_EXTREME = [
    2**63,
    2**64,
    -(2**63) - 1,
    10**400,
    -1,
    0,
    2**53 + 1,
    1e308,
    -0.0,
    "1e400",
]


@dataclass(frozen=True, slots=True)
class Mutant:
    family: str
    raw: bytes
    id: str | None  # the id a result must carry (None: none can be read)
    ok: bool = False  # a fresh valid command: answered "ok" (unless rate_limited)


def signed_raw(key: Ed25519PrivateKey, kid: str, payload: bytes) -> bytes:
    """A signed envelope over exactly ``payload`` (any bytes: garbage is allowed)."""
    return msgspec.json.encode(
        {
            "kid": kid,
            "payload": base64.b64encode(payload).decode(),
            "sig": base64.b64encode(key.sign(payload)).decode(),
        }
    )


def _payload(gw: str, **over: Any) -> dict[str, Any]:
    base = {"id": str(uuid.uuid4()), "ts": time.time_ns() // 1_000_000, "gw": gw, "cmd": "ping"}
    return {**base, "args": {}, **over}


def mutants(
    rng: random.Random, *, key: Ed25519PrivateKey, kid: str, gw: str, n: int, max_bytes: int
) -> Iterator[Mutant]:
    """``n`` hostile messages (see the module docstring); ``max_bytes`` is the agent's cap."""
    sent: list[bytes] = []
    families = [
        "random_bytes", "truncated", "deep_outer", "deep_signed", "huge_small", "huge_over",
        "extreme_numbers", "unicode", "signed_garbage", "replay", "wrong_types", "forged_log",
        "unknown_fields", "valid",
    ]  # fmt: skip
    for i in range(n):
        family = families[i % len(families)] if i < len(families) else rng.choice(families)
        m = _one(family, rng, key=key, kid=kid, gw=gw, sent=sent, max_bytes=max_bytes)
        if m.ok:
            sent.append(m.raw)
        yield m


def _one(
    family: str,
    rng: random.Random,
    *,
    key: Ed25519PrivateKey,
    kid: str,
    gw: str,
    sent: list[bytes],
    max_bytes: int,
) -> Mutant:
    if family == "random_bytes":
        return Mutant(family, rng.randbytes(rng.randint(0, 2000)), None)
    if family == "truncated":
        whole = signed_raw(key, kid, msgspec.json.encode(_payload(gw)))
        return Mutant(family, whole[: rng.randint(0, len(whole) - 1)], None)
    if family == "deep_outer":
        depth = rng.choice([9, 64, 2000, max_bytes // 2 - 8])
        opener = rng.choice(["[", '{"a":'])
        closer = "]" if opener == "[" else "}"
        body = '{"id": "deep", "x": ' + opener * depth + "1" + closer * depth + "}"
        return Mutant(family, body.encode()[:max_bytes], None)  # refused before decoding
    if family == "deep_signed":
        depth = rng.choice([9, 500, 2000])
        head = '{"id": "deep", "ts": 1, "gw": "' + gw + '", "cmd": "ping", "args": {"a": '
        inner = head + "[" * depth + "1" + "]" * depth + "}}"
        return Mutant(family, signed_raw(key, kid, inner.encode()), None)  # id not readable
    if family in ("huge_small", "huge_over"):
        size = max_bytes - 200 if family == "huge_small" else rng.choice([max_bytes + 1, 100_000])
        field = rng.choice(["id", "kid", "x"])
        doc = {"id": "h-" + str(uuid.uuid4()), field: "A" * size}
        raw = msgspec.json.encode(doc)
        if len(raw) > max_bytes:
            return Mutant(family, raw, None)
        cid = doc["id"]
        return Mutant(family, raw, cid[:128] + ("…" if len(cid) > 128 else ""))
    if family == "extreme_numbers":
        field = rng.choice(["ts", "from_seq", "to_seq", "both"])
        value = rng.choice(_EXTREME)
        p = _payload(gw, cmd="resend", args={"stream": "alarm", "from_seq": 1, "to_seq": 2})
        if field == "ts":
            p["ts"] = value
        elif field == "both":
            p["args"] = {"stream": "event", "from_seq": value, "to_seq": value}
        else:
            p["args"][field] = value
        text = msgspec.json.encode(p).replace(b'"1e400"', b"1e400")
        unreadable = value == "1e400"  # out of range for any number: the payload is no JSON
        return Mutant(family, signed_raw(key, kid, text), None if unreadable else p["id"])
    if family == "unicode":
        cid = "u-" + str(uuid.uuid4())
        junk = rng.choice(_UNICODE)
        where = rng.choice(["gw", "cmd", "tag", "kid", "outer"])
        p = _payload(gw, cmd="ack_alarm", args={"tag": "GT-101"})
        p["id"] = cid
        text = msgspec.json.encode(p).decode()
        if where == "gw":
            text = text.replace(f'"gw":"{gw}"', f'"gw":"{gw}{junk}"')
        elif where == "cmd":
            text = text.replace('"cmd":"ack_alarm"', f'"cmd":"ack{junk}"')
        elif where == "tag":
            text = text.replace('"tag":"GT-101"', f'"tag":"GT{junk}"')
        if where == "outer":
            raw = ('{"id": "' + cid + junk + '", "kid": "k", "payload": "", "sig": ""}').encode()
            return Mutant(family, raw, None)  # an id with a surrogate may be echoed replaced
        if where == "kid":
            raw = signed_raw(key, kid + junk, text.encode("utf-8", "surrogatepass"))
            return Mutant(family, raw, cid)
        # a lone surrogate escape or a raw control character makes the payload invalid JSON
        invalid = "\\ud" in junk or any(c < " " for c in junk)
        payload = text.encode("utf-8", "surrogatepass")
        return Mutant(family, signed_raw(key, kid, payload), None if invalid else cid)
    if family == "signed_garbage":
        return Mutant(family, signed_raw(key, kid, rng.randbytes(rng.randint(0, 300))), None)
    if family == "replay":
        if not sent:
            return _one("valid", rng, key=key, kid=kid, gw=gw, sent=sent, max_bytes=max_bytes)
        raw = rng.choice(sent)
        inner = msgspec.json.decode(base64.b64decode(msgspec.json.decode(raw)["payload"]))
        return Mutant(family, raw, inner["id"])
    if family == "wrong_types":
        choice = rng.randrange(6)
        cid = "t-" + str(uuid.uuid4())
        raws: list[tuple[bytes, str | None]] = [
            (b"[1, 2, 3]", None),
            (b'"just a string"', None),
            (b"12345", None),
            (msgspec.json.encode({"id": cid, "kid": 5, "payload": [], "sig": {}}), None),
            (msgspec.json.encode({"id": cid, "kid": kid, "payload": "@@@", "sig": "x"}), None),
            (signed_raw(key, kid, msgspec.json.encode(_payload(gw, id=cid, args=[1]))), cid),
        ]
        raw, expect = raws[choice]
        return Mutant(family, raw, expect)
    if family == "forged_log":
        return Mutant(family, msgspec.json.encode({"id": FORGED_ID, "cmd": "ping"}), FORGED_ID)
    if family == "unknown_fields":
        p = _payload(gw)
        p[f"evil\n{rng.randrange(10**6)}\u001b[2J"] = 1
        return Mutant(family, signed_raw(key, kid, msgspec.json.encode(p)), p["id"])
    p = _payload(gw)
    return Mutant("valid", signed_raw(key, kid, msgspec.json.encode(p)), p["id"], ok=True)
