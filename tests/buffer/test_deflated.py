"""The stored zlib layout: handed out deflated (Deflated), readable by any zlib reader."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest

from buffer import Record, Store, Stream
from buffer.crypto import pack, unpack, unpack_lazy
from buffer.errors import RecordAuthError
from buffer.record import Deflated

BODY = json.dumps(
    {
        "t0": 1764300000123,
        "at": [[i * 1000, {f"GT-{k:05d}": k * 0.5 for k in range(40)}] for i in range(20)],
    }  # fmt: skip
).encode()


def test_a_compressible_payload_is_handed_out_deflated_with_its_checksum_and_size() -> None:
    stored = pack(BODY)
    d = unpack_lazy(stored)
    assert isinstance(d, Deflated)
    assert (d.size, d.adler32) == (len(BODY), zlib.adler32(BODY))
    assert d.data.endswith(b"\x00\x00\xff\xff")  # a sync flush: byte-aligned, no final block
    assert d.inflate() == BODY == unpack(stored)
    assert d.peek(9) == BODY[:9]
    # The same deflate data between other blocks inflates to the payload (what a splice does).
    framed = zlib.decompressobj(-zlib.MAX_WBITS)
    assert framed.decompress(d.data + b"\x03\x00") == BODY and framed.eof


def test_an_older_agent_reads_the_layout_as_plain_zlib_and_old_records_still_read() -> None:
    stored = pack(BODY)
    assert stored[0] == 1  # the zlib codec byte an older agent knows
    assert zlib.decompress(stored[1:]) == BODY  # its unpack: the size after the stream is ignored
    older = bytes([1]) + zlib.compress(BODY, 6)  # what pack wrote before the layout (78 9c)
    assert unpack_lazy(older) == BODY and unpack(older) == BODY


def test_incompressible_and_tiny_payloads_stay_raw() -> None:
    for payload in (b"", b"ab", bytes(range(256))):
        stored = pack(payload)
        assert stored[0] == 0 and unpack_lazy(stored) == payload


def test_a_deflated_body_that_does_not_inflate_to_its_size_is_an_auth_error() -> None:
    d = unpack_lazy(pack(BODY))
    assert isinstance(d, Deflated)
    with pytest.raises(RecordAuthError, match="inflates to"):
        Deflated(d.data, d.adler32, d.size + 1).inflate()
    with pytest.raises(RecordAuthError, match="undecodable"):
        Deflated(b"\xff" * 40, 1, 40).inflate()


def test_leased_records_keep_the_deflated_form_and_inflate_only_when_read(tmp_path: Path) -> None:
    store = Store.open(path=tmp_path / "b.db", key_file=tmp_path / "b.key", gateway_id="G1")
    try:
        store.append(Stream.TELEMETRY, [BODY, b"{}"], created_ms=5)
        big, small = store.lease(max_count=10, max_bytes=1 << 20)
        assert big.deflated is not None and big.size == len(BODY)
        assert small.deflated is None and small.payload == b"{}"
        assert big.payload == BODY  # inflated on first access
        assert big == Record(Stream.TELEMETRY, big.seq, 5, BODY)
        with pytest.raises(AttributeError, match="immutable"):
            big.seq = 9  # type: ignore[misc]
        # max_bytes counts payload bytes, deflated or not
        store.release_all()
        assert len(store.lease(max_count=10, max_bytes=len(BODY) + 1)) == 1
    finally:
        store.close()


def test_a_record_needs_a_payload_or_its_deflated_form() -> None:
    with pytest.raises(ValueError, match="payload or its deflated form"):
        Record(Stream.ALARM, 1, 0)
