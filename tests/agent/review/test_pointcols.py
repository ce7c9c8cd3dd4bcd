"""Reading one tag's rows straight into columns gives exactly what the full JSON decode gives,
whichever of the three ways a body takes (agent/review/pointcols.py)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import msgspec
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.codec import telemetry_body
from agent.codec_v2 import telemetry_body_v2
from agent.review.config import RecorderConfig
from agent.review.history import QUALITY_NAMES, History, Point, point_log
from agent.review.pointcols import TagRows
from agent.review.recorder import IncidentRecorder
from buffer import Store, Stream
from drivers import Quality
from rules.events import AlarmEvent
from tests.agent.review.conftest import GW

V1 = len(b'{"points":[')
CODES = {q.wire_name: int(q) for q in Quality}  # an unknown name reads as bad_device
TAGS = ("GT-102", "GT-10", 'a"b[c]', "液位-1", "X.*+?")


class _Body(msgspec.Struct):
    points: list[Point]


def _full(bodies: list[bytes], tag: str) -> list[tuple[int, float, int]]:
    out = []
    for raw in bodies:
        for p in msgspec.json.decode(raw, type=_Body).points:
            if p.tag == tag:
                q = 0 if p.quality is None else CODES.get(p.quality, int(Quality.BAD_DEVICE))
                out.append((p.ts, math.nan if p.value is None else float(p.value), q))
    return out


def _fast(bodies: list[bytes], tag: str) -> tuple[list[tuple[int, float, int]], list[int]]:
    rows = TagRows([tag])
    for raw in bodies:
        rows.read(raw, V1)
    c = rows.chunks
    assert set(c.names) <= {tag}
    got = [
        (int(t), float(v), int(q))
        for ts, vs, qs in zip(c.ts, c.value, c.quality, strict=True)
        for t, v, q in zip(ts.tolist(), vs.tolist(), qs.tolist(), strict=True)
    ]
    return got, rows.paths


def _same(a: list[tuple[int, float, int]], b: list[tuple[int, float, int]]) -> bool:
    return len(a) == len(b) and all(
        x[0] == y[0] and x[2] == y[2] and (x[1] == y[1] or (math.isnan(x[1]) and math.isnan(y[1])))
        for x, y in zip(a, b, strict=True)
    )


def test_each_way_gives_the_full_decode() -> None:
    t0 = 1_780_000_000_000
    only = telemetry_body([("GT-102", t0 + i, 0.1 * i - 3, None) for i in range(300)])
    exact = telemetry_body([("GT-102", t0, 2**60 + 1, None), ("GT-102", t0 + 1, 1e-07, None)])
    mixed = telemetry_body(
        [
            ("GT-10", t0, 1.0, None),
            ("GT-102", t0 + 1, None, "bad_device"),
            ("GT-102", t0 + 2, 5e20, "uncertain"),
            ("GT-1020", t0 + 3, 4.0, None),
        ]
    )
    unknown = b'{"points":[["GT-102",1,2.0,"some-new"],["GT-102",2,3.0]]}'
    bodies = [only, exact, mixed, unknown]
    got, paths = _fast(bodies, "GT-102")
    assert _same(got, _full(bodies, "GT-102"))
    assert paths == [2, 1, 1]  # only + exact by way 1, mixed by way 2, an unknown quality by 3
    assert _fast(bodies, "GT-1")[0] == []


_value = st.one_of(
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(2**63), 2**64 - 1),
)
_row = st.tuples(
    st.sampled_from(TAGS),
    st.integers(0, 2**53),
    _value,
    st.sampled_from([None, *(n for n in QUALITY_NAMES if n != "good")]),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(_row, max_size=12), max_size=6), st.sampled_from(TAGS))
def test_any_bodies_give_the_full_decode(
    records: list[list[tuple[str, int, float | int | None, str | None]]], tag: str
) -> None:
    bodies = [telemetry_body(r) for r in records]
    assert _same(_fast(bodies, tag)[0], _full(bodies, tag))


def test_point_log_merges_chunks_after_points_and_dedups_the_first() -> None:
    rows = TagRows(["A"])
    rows.read(telemetry_body([("A", 5, 1.0, None), ("A", 3, 2.0, None)]), V1)
    log = point_log(
        [Point("A", 5, 9.0), Point("B", 4, 7.0)], dedup=True, chunks=rows.chunks, to_ms=6
    )
    assert log.tags == ("A", "B")
    assert log.ts_ms.tolist() == [3, 5, 4] and log.value.tolist() == [2.0, 9.0, 7.0]
    assert np.array_equal(log.tag, [0, 0, 1])


def test_history_points_of_some_tags_equal_all_points_filtered(
    make_store: Callable[[], Store], store_paths: dict[str, Path]
) -> None:
    t0 = 1_780_000_000_000
    names = ("GT-101", "GT-102", "PT-101")
    rec = IncidentRecorder(
        config=RecorderConfig(pre_s=5.0, post_s=1.0),
        tag_names=names,
        devices=("a", "a", "b"),
    )
    store = make_store()
    incident: list[bytes] = []
    for s in range(40):
        ts = t0 + 1000 * s
        vals = [float(s), None if s % 7 == 0 else 0.5 * s, 100.0 + s]
        rows = [
            (n, ts, v, "bad_comm" if v is None else None) for n, v in zip(names, vals, strict=False)
        ]
        body = telemetry_body_v2(rows) if s % 3 == 0 else telemetry_body(rows[1:2] + rows[::2])
        store.append(Stream.TELEMETRY, [body], created_ms=ts)
        events = [AlarmEvent(ts, 1, "high", "raise", 2, 1.0)] if s == 20 else []
        clean = [math.nan if v is None else v for v in vals]
        incident += rec.feed(
            np.arange(3, dtype=np.int32),
            np.full(3, ts, np.int64),
            np.array(clean),
            np.array([0, 2 if vals[1] is None else 0, 0], np.uint8),
            events,
        )
    store.append(Stream.INCIDENT, incident + rec.close_all(t0 + 50_000))
    store.close()
    with History.open(**store_paths, gateway_id=GW) as h:
        for wanted in (["GT-102"], ["GT-101", "PT-101"]):
            for window in ((None, None), (t0 + 10_000, t0 + 30_000)):
                some = h.points(
                    tags=wanted, from_ms=window[0], to_ms=window[1], with_incidents=True
                )
                every = h.points(from_ms=window[0], to_ms=window[1], with_incidents=True)
                assert some.tags == tuple(wanted)
                for name in wanted:
                    a, b = some.of(name), every.of(name)
                    assert all(
                        np.array_equal(x, y, equal_nan=True) for x, y in zip(a, b, strict=True)
                    )
                    assert a[0].shape[0] > 0
