"""The vectorised KPIs agree with the slow, obvious twin on generated histories read back from a
real buffer, and the figures mean what docs/review.md says on a hand-made history."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from agent.codec import alarm_body
from agent.review.history import History
from agent.review.kpi import AlarmKpis, alarm_kpis
from buffer import Store, StoreReader, Stream
from tests.agent.review.conftest import GW
from tests.agent.review.histories import DAY, T0, random_alarm_history
from tests.agent.review.naive import naive_kpis


def _decoded(paths: dict[str, Path], stream: Stream) -> list[dict[str, object]]:
    with StoreReader.open(**paths, gateway_id=GW) as r:
        return [json.loads(rec.payload or b"") for rec in r.records(stream=stream)]


def _compare(k: AlarmKpis, want: dict[str, object]) -> None:
    got = {f: getattr(k, f) for f in want}
    got["bad_actors"] = [(a.tag, a.alarm, a.count, a.share) for a in k.bad_actors]
    got["priority"] = dict(k.priority)
    got["ack_ms"], got["clear_ms"] = dict(k.ack_ms), dict(k.clear_ms)
    for f in ("per_10min", "per_day"):
        assert got[f] == pytest.approx(want[f]), f
        got[f] = want[f]
    assert [a[3] for a in got["bad_actors"]] == pytest.approx([a[3] for a in want["bad_actors"]])  # type: ignore[attr-defined]
    got["bad_actors"] = want["bad_actors"] = [a[:3] for a in got["bad_actors"]]  # type: ignore[index]
    want["bad_actors"] = [a[:3] for a in want["bad_actors"]]  # type: ignore[attr-defined]
    assert got == want


@pytest.mark.parametrize(
    ("seed", "tags", "days", "window"),
    [(1, 40, 6.0, (1.0, 5.0)), (2, 25, 3.0, (0.0, 3.0)), (3, 60, 4.0, (2.5, 2.6))],
)
def test_kpis_agree_with_the_naive_twin_on_generated_histories(
    make_store: Callable[[], Store],
    store_paths: dict[str, Path],
    seed: int,
    tags: int,
    days: float,
    window: tuple[float, float],
) -> None:
    store = make_store()
    device_of = random_alarm_history(store, tags=tags, days=days, seed=seed)
    store.close()
    from_ms, to_ms = T0 + int(window[0] * DAY), T0 + int(window[1] * DAY)
    with History.open(**store_paths, gateway_id=GW) as h:
        log = h.alarms(to_ms=to_ms)
        events = h.events(from_ms=from_ms, to_ms=to_ms)
    k = alarm_kpis(
        log, from_ms=from_ms, to_ms=to_ms, fleeting_ms=10_000, device_of=device_of, events=events
    )
    want = naive_kpis(
        _decoded(store_paths, Stream.ALARM),
        from_ms=from_ms,
        to_ms=to_ms,
        fleeting_ms=10_000,
        device_of=device_of,
        events=_decoded(store_paths, Stream.EVENT),
    )
    assert k.alarms > 20 and k.standing > 0 and k.acked > 0 and k.faults_by_device
    if window[1] - window[0] > 2:  # the short window is the edge case "starts mid-history"
        assert k.stale > 0 and k.chattering > 0 and k.fleeting > 0
    _compare(k, want)


def _write(store: Store, rows: list[tuple[int, str, str, str, int, dict[str, object]]]) -> None:
    store.append(
        Stream.ALARM,
        [
            alarm_body(
                tag=tag,
                alarm=kind,
                event=ev,
                level=lv,
                value=1.0,
                ts_ms=ts,
                alarm_id=f"{GW}:{tag}:{kind}:{aid}",
                extra=extra,
            )  # type: ignore[arg-type]
            for ts, tag, kind, ev, lv, extra in rows
            for aid in [extra.pop("occ", ts)]
        ],
    )


def test_hand_made_history_gives_the_documented_figures(
    make_store: Callable[[], Store], store_paths: dict[str, Path]
) -> None:
    s = 1000
    t0 = T0
    rows: list[tuple[int, str, str, str, int, dict[str, object]]] = []
    # A chatters: 3 raises in 50 s (each cleared after 2 s: fleeting too)
    for k in range(3):
        rows += [
            (t0 + k * 25 * s, "A", "high", "raise", 1, {"occ": t0 + k * 25 * s}),
            (t0 + k * 25 * s + 2 * s, "A", "high", "clear", 0, {"occ": t0 + k * 25 * s}),
        ]
    # B: raised, escalated, acknowledged by li after 90 s, cleared after 30 min
    b = t0 + 100 * s
    rows += [
        (b, "B", "high", "raise", 1, {"occ": b}),
        (b + 10 * s, "B", "high", "escalate", 2, {"occ": b}),
        (b + 90 * s, "B", "high", "ack", 2, {"occ": b, "user": "li"}),
        (b + 1800 * s, "B", "high", "clear", 0, {"occ": b}),
    ]
    # C: a sensor fault still standing at the end
    rows += [(t0 + 200 * s, "C", "fault", "raise", 1, {"occ": t0 + 200 * s, "reason": "quality"})]
    store = make_store()
    rows.sort(key=lambda r: r[0])
    _write(store, rows)
    store.close()
    with History.open(**store_paths, gateway_id=GW) as h:
        log = h.alarms(to_ms=t0 + 3600 * s)
    k = alarm_kpis(
        log,
        from_ms=t0,
        to_ms=t0 + 3600 * s,
        fleeting_ms=10_000,
        device_of={"A": "plc", "B": "plc", "C": "rtu"},
    )
    assert (k.alarms, k.periods, k.peak, k.flood_periods) == (5, 6, 5, 0)
    assert k.per_10min == pytest.approx(5 / 6) and k.per_day == pytest.approx(5 * 24)
    assert (k.chattering, k.chattering_raises, k.fleeting) == (1, 3, 3)
    assert (k.standing, k.stale) == (1, 0)
    assert k.standing_list == (("C", "fault", 1, t0 + 200 * s),)
    assert [(a.tag, a.alarm, a.count) for a in k.bad_actors] == [
        ("A", "high", 3),
        ("B", "high", 1),
        ("C", "fault", 1),
    ]
    assert dict(k.priority) == {1: 4, 2: 1}
    assert dict(k.ack_ms) == {50: 90_000, 90: 90_000, 95: 90_000}
    assert k.clear_ms[50] == 2000 and k.clear_ms[95] == 1_800_000
    assert k.faults_by_device == {"rtu": (1, 0, 0)}
    assert log.users == {int(i): "li" for i in (log.event == 5).nonzero()[0]}
    assert (
        msgspec.json.decode(
            alarm_body(
                tag="x",
                alarm="high",
                event="ack",
                level=1,
                value=None,
                ts_ms=1,
                alarm_id="a",
                extra={"user": "li"},
            )
        )["user"]
        == "li"
    )


def test_an_occurrence_stays_whole_when_a_restart_gave_its_later_events_another_id(
    make_store: Callable[[], Store], store_paths: dict[str, Path]
) -> None:
    s = 1000
    rows: list[tuple[int, str, str, str, int, dict[str, object]]] = [
        (T0, "D", "high", "raise", 1, {"occ": T0}),
        # the agent restarted: the occurrence's later events carry ids of their own
        (T0 + 50 * s, "D", "high", "ack", 1, {"occ": T0 + 50 * s, "user": "op-li"}),
        (T0 + 90 * s, "D", "high", "clear", 0, {"occ": T0 + 90 * s}),
        (T0 + 95 * s, "D", "high", "clear", 0, {"occ": T0 + 95 * s}),  # no raise: no occurrence
        (T0 + 100 * s, "D", "high", "raise", 1, {"occ": T0 + 100 * s}),
    ]
    store = make_store()
    _write(store, rows)
    store.close()
    with History.open(**store_paths, gateway_id=GW) as h:
        log = h.alarms()
    k = alarm_kpis(log, from_ms=T0, to_ms=T0 + 600 * s, fleeting_ms=10_000, device_of={})
    assert (k.alarms, k.standing, k.acked, k.cleared) == (2, 1, 1, 1)
    assert dict(k.clear_ms) == {50: 90_000, 90: 90_000, 95: 90_000}
    assert dict(k.ack_ms)[50] == 50_000
    assert k.standing_list == (("D", "high", 1, T0 + 100 * s),)


def test_events_pair_with_the_raise_of_their_alarm_id_and_by_position_without_one(
    make_store: Callable[[], Store], store_paths: dict[str, Path]
) -> None:
    s = 1000
    rows: list[tuple[int, str, str, str, int, dict[str, object]]] = [
        (T0, "L", "high", "raise", 1, {"occ": "one"}),  # latched
        (T0 + 10 * s, "L", "high", "return", 0, {"occ": "one"}),
        (T0 + 20 * s, "L", "high", "raise", 1, {"occ": "two"}),  # again, before the ack
        (T0 + 30 * s, "L", "high", "ack", 1, {"occ": "one", "user": "op-li"}),  # of "one"
        (T0 + 40 * s, "L", "high", "clear", 0, {"occ": "one"}),
        (T0 + 70 * s, "L", "high", "ack", 1, {"occ": "two", "user": "op-li"}),
        (T0 + 75 * s, "L", "high", "clear", 0, {"occ": "two"}),
        # a restart with the id kept (RULES.md 1.1): still one occurrence, cleared
        (T0 + 100 * s, "R", "high", "raise", 2, {"occ": "r"}),
        (T0 + 160 * s, "R", "high", "deescalate", 1, {"occ": "r"}),
        (T0 + 400 * s, "R", "high", "clear", 0, {"occ": "r"}),
        # an id with no raise (before ids persisted): by position, to the last raise of R
        (T0 + 500 * s, "R", "high", "ack", 1, {"occ": "old", "user": "op-wang"}),
    ]
    store = make_store()
    _write(store, rows)
    store.close()
    with History.open(**store_paths, gateway_id=GW) as h:
        log = h.alarms()
    k = alarm_kpis(log, from_ms=T0, to_ms=T0 + 600 * s, fleeting_ms=10_000, device_of={})
    assert (k.alarms, k.standing, k.acked, k.cleared) == (3, 0, 3, 3)
    # acks: "one" 30 s after its raise (by position it would have been "two", 10 s), "two"
    # 50 s, R 400 s (by position); clears: 40 s, 55 s, 300 s
    assert dict(k.ack_ms) == {50: 50_000, 90: 400_000, 95: 400_000}
    assert dict(k.clear_ms) == {50: 55_000, 90: 300_000, 95: 300_000}
    assert dict(k.priority) == {1: 2, 2: 1}
    want = naive_kpis(
        _decoded(store_paths, Stream.ALARM),
        from_ms=T0,
        to_ms=T0 + 600 * s,
        fleeting_ms=10_000,
        device_of={},
    )
    _compare(k, want)
