"""Payload encoding: a stored deflated body spliced into the zlib stream of its envelope."""

from __future__ import annotations

import json
import random
import zlib

import pytest

from agent.codec import encode_envelope, envelope_head
from agent.uplink.encoding import (
    SPLICE_MIN_BYTES,
    EnvelopeParts,
    decode_payload,
    encode_payload,
)
from buffer.crypto import pack, unpack_lazy
from buffer.record import Deflated


def v2_body(n_tags: int, seed: int) -> bytes:
    rng = random.Random(seed)
    values = {f"GT-{k:05d}": round(rng.uniform(0, 100), 1) for k in range(n_tags)}
    return json.dumps({"t0": 1764300000123, "at": [[0, values]]}, separators=(",", ":")).encode()


def parts(body: bytes, seq: int = 7) -> tuple[EnvelopeParts, bytes]:
    fields = {"site": "S1", "gateway": "G1", "stream": "telemetry", "seq": seq,
              "ts_ms": 1764300000123, "backfill": True, "v": 2}  # fmt: skip
    deflated = unpack_lazy(pack(body))
    assert isinstance(deflated, Deflated)
    head = envelope_head(**fields)  # type: ignore[arg-type]
    return EnvelopeParts(head, deflated, b"}"), encode_envelope(**fields, body=body)  # type: ignore[arg-type]


def test_the_envelope_is_its_head_the_body_and_a_closing_brace() -> None:
    body = v2_body(3, 1)
    p, whole = parts(body)
    assert p.head + body + b"}" == whole and p.joined() == whole


@pytest.mark.parametrize(("n_tags", "seed"), [(200, 1), (1000, 2), (3000, 3)])
def test_a_spliced_payload_is_one_zlib_stream_of_exactly_the_envelope(
    n_tags: int, seed: int
) -> None:
    p, whole = parts(v2_body(n_tags, seed), seq=seed)
    assert p.body.size >= SPLICE_MIN_BYTES
    wire = encode_payload(p, "json+zlib")
    assert wire[0] == 0x78  # the first-byte rule (design/UPLINK.md "Compression")
    assert zlib.decompress(wire) == whole
    assert decode_payload(wire) == whole  # the listener's bounded reader: whole, nothing after
    assert len(wire) < len(zlib.compress(whole, 1))  # the body keeps the buffer's compression


def test_a_small_body_is_compressed_with_its_envelope_and_plain_json_is_joined() -> None:
    p, whole = parts(v2_body(20, 4))
    assert p.body.size < SPLICE_MIN_BYTES
    assert zlib.decompress(encode_payload(p, "json+zlib")) == whole
    big, big_whole = parts(v2_body(1000, 5))
    assert encode_payload(big, "json") == big_whole


def test_plain_envelopes_encode_as_before() -> None:
    whole = parts(v2_body(10, 6))[1]
    assert encode_payload(whole, "json") == whole
    assert zlib.decompress(encode_payload(whole, "json+zlib")) == whole


class _NoInflate:
    """A deflated body that must not be inflated (its plaintext is given beside it)."""

    def __init__(self, real: Deflated) -> None:
        self.data, self.adler32, self.size = real.data, real.adler32, real.size

    def inflate(self) -> bytes:
        raise AssertionError("inflated although the plaintext was at hand")


@pytest.mark.parametrize("n_tags", [20, 1000])
def test_a_body_given_with_its_plaintext_goes_out_the_same_without_inflating(n_tags: int) -> None:
    body = v2_body(n_tags, 8)
    p, whole = parts(body)
    held = EnvelopeParts(p.head, _NoInflate(p.body), p.tail, body)  # type: ignore[arg-type]
    assert held.joined() == whole and encode_payload(held, "json") == whole
    if p.body.size >= SPLICE_MIN_BYTES:  # spliced as stored: the same bytes on the wire
        assert encode_payload(held, "json+zlib") == encode_payload(p, "json+zlib")
    else:
        assert zlib.decompress(encode_payload(held, "json+zlib")) == whole
