"""Body v2 from columns: the same bytes as the reference encoder, every point exactly once."""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.codec import CodecError
from agent.codec_v2 import body_version, decode_telemetry_v2, telemetry_body_v2
from agent.telemetry_v2 import GroupBatcher, GroupEncoder
from drivers import Quality

QUALITIES = {int(q): q.wire_name for q in Quality if q}
WIRE = {0: None, **QUALITIES}

values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -0.0, 1e16, 5e-324, 2.3000000000000003]),
)


@st.composite
def polls(draw: st.DrawFn) -> tuple[list[str], list[list[tuple[int, int, float, int]]]]:
    names = draw(st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=6, unique=True))
    sample = st.tuples(
        st.integers(0, len(names) - 1),
        st.integers(10**12, 10**12 + 3),  # few distinct ts: shared groups and repeats
        values,
        st.sampled_from(sorted(WIRE)),
    )
    return names, draw(st.lists(st.lists(sample, max_size=12), min_size=1, max_size=4))


def _cols(poll: list[tuple[int, int, float, int]]) -> tuple[np.ndarray, ...]:
    return (
        np.array([p[0] for p in poll], dtype=np.int32),
        np.array([p[1] for p in poll], dtype=np.int64),
        np.array([p[2] for p in poll], dtype=np.float64),
        np.array([p[3] for p in poll], dtype=np.uint8),
    )


@settings(max_examples=150, deadline=None)
@given(polls(), st.integers(1, 7), st.integers(64, 400), st.booleans())
def test_records_equal_the_reference_encoding_of_their_points_in_order(
    data: tuple[list[str], list[list[tuple[int, int, float, int]]]],
    max_points: int,
    max_bytes: int,
    linger: bool,
) -> None:
    names, poll_list = data
    enc = GroupEncoder(names, QUALITIES)
    batcher = GroupBatcher(max_points=max_points, max_bytes=max_bytes, linger_ms=5 if linger else 0)
    bodies: list[bytes] = []
    for poll in poll_list:
        bodies += batcher.add(enc.pieces(*_cols(poll)), 0)
    bodies += batcher.flush()
    got = [p for b in bodies for p in decode_telemetry_v2(b)]
    want = [
        (names[t], ts, None if q or not math.isfinite(v) else v, WIRE[q])
        for poll in poll_list
        for t, ts, v, q in poll
    ]
    assert [tuple(p) for p in got] == want  # every point once, in order
    for body in bodies:
        points = decode_telemetry_v2(body)
        assert 1 <= len(points) <= max_points
        assert body == telemetry_body_v2(points)  # byte-identical to the reference
        assert len(body) <= max_bytes or len(points) == 1
        assert body_version("telemetry", body) == 2


def test_a_poll_shares_one_timestamp_and_bad_points_carry_null_and_their_quality() -> None:
    enc = GroupEncoder(["GT-101", "GT-102", "GT-103"], QUALITIES)
    b = GroupBatcher(max_points=100, max_bytes=65536, linger_ms=0)
    tag = np.array([0, 1, 2, 0], dtype=np.int32)
    ts = np.array([1000, 1000, 1000, 2000], dtype=np.int64)
    value = np.array([2.9, 27.8, 5.0, 3.0])
    q = np.array([0, 0, int(Quality.BAD_COMM), 0], dtype=np.uint8)
    (body,) = b.add(enc.pieces(tag, ts, value, q), 0)
    assert body == (
        b'{"t0":1000,"at":[[0,{"GT-101":2.9,"GT-102":27.8,"GT-103":null},'
        b'{"GT-103":"bad_comm"}],[1000,{"GT-101":3.0}]]}'
    )


def test_an_exact_integer_column_is_written_as_a_json_integer() -> None:
    # The hook for 64-bit registers: the float column cannot hold 2**63 - 1 exactly.
    enc = GroupEncoder(["E1", "E2"], QUALITIES)
    tag = np.array([0, 1], dtype=np.int32)
    ts = np.array([5, 5], dtype=np.int64)
    pieces = enc.pieces(tag, ts, np.array([1.8e19, 1.5]), np.zeros(2, np.uint8), {0: 2**64 - 1})
    (body,) = GroupBatcher(max_points=9, max_bytes=999, linger_ms=0).add(pieces, 0)
    assert msgspec.json.decode(body) == {"t0": 5, "at": [[0, {"E1": 2**64 - 1, "E2": 1.5}]]}


def test_an_unknown_quality_code_or_tag_index_is_an_error_naming_it() -> None:
    enc = GroupEncoder(["A"], QUALITIES)
    one = np.zeros(1, dtype=np.int64)
    with pytest.raises(ValueError, match=r"unknown quality code\(s\) \[77\]"):
        enc.pieces(np.zeros(1, np.int32), one, np.zeros(1), np.array([77], np.uint8))
    with pytest.raises(ValueError, match="tag index outside 0..0"):
        enc.pieces(np.ones(1, np.int32), one, np.zeros(1), np.zeros(1, np.uint8))


@pytest.mark.parametrize(
    "body",
    [
        b'{"t0":1,"at":[[-1,{"A":1}]]}',  # negative dt
        b'{"t0":1,"at":[[0,{"A":1},{"A":"bad_comm"}]]}',  # a quality with a value
        b'{"t0":1,"at":[[0,{"A":"x"}]]}',
        b'{"t0":1,"points":[]}',
    ],
)
def test_malformed_v2_bodies_are_refused(body: bytes) -> None:
    with pytest.raises(CodecError):
        decode_telemetry_v2(body)
