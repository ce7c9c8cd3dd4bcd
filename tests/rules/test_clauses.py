"""Hand-written traces, one per clause of design/RULES.md; each is checked against the engine
and against the naive twin, so a misreading of the text shows up as a disagreement here."""

from __future__ import annotations

import math
from typing import Any, get_args

import numpy as np
import pytest

from rules import AlarmEvent, AlarmKind, RuleEngine
from rules.config import RuleConfig
from rules.layout import KINDS
from tests.rules.harness import Ack, Sample, events_match, feed, one_tag, run_naive, short
from tests.rules.naive import NaiveEngine


def both(params: dict[str, Any], *rows: tuple[float, ...] | Ack) -> list[AlarmEvent]:
    """Run the rows through engine and twin; assert they agree; return the engine's events."""
    engine = one_tag(**params)
    got = feed(engine, *rows)
    ops: list[Sample | Ack] = [
        r
        if isinstance(r, Ack)
        else Sample(0, round(r[0] * 1000), r[1], bool(r[2]) if len(r) > 2 else True)
        for r in rows
    ]
    twin = NaiveEngine([engine.params(0)])
    want = run_naive(twin, ops)
    assert events_match(got, want), f"engine {got}\n twin {want}"
    return got


# -- fault --------------------------------------------------------------------------------------


def test_fault_is_raised_once_with_its_reason_and_cleared_by_the_next_valid_sample() -> None:
    ev = both(
        {"range": (0.0, 100.0)},
        (0, 5.0),
        (1, 5.0, False),
        (2, math.nan),
        (3, 7.0),
        (4, 101.0),
        (5, 100.0),
        (6, math.inf),
        (7, -0.0),
    )
    assert short(ev) == [
        (1, "fault", "raise", 1),
        (3, "fault", "clear", 0),
        (4, "fault", "raise", 1),
        (5, "fault", "clear", 0),
        (6, "fault", "raise", 1),
        (7, "fault", "clear", 0),
    ]
    assert [e.extra.get("reason") for e in ev if e.event == "raise"] == ["quality", "range", "nan"]
    assert ev[0].value == 5.0
    assert ev[4].value is None


def test_quality_is_reported_before_nan_and_range() -> None:
    ev = both({"range": (0.0, 1.0)}, (0, math.nan, False))
    assert ev[0].extra == {"reason": "quality"}


def test_an_invalid_sample_cancels_pending_delays_but_active_alarms_stay_active() -> None:
    ev = both(
        {"high": 10.0, "low": 0.0, "on_delay_s": 2.0, "off_delay_s": 2.0},
        (0, 11.0),
        (1, 11.0, False),  # cancels the on-delay started at 0
        (2, 11.0),  # restarts it
        (3, 11.0),
        (4, 11.0),  # 2 s after the restart
        (5, 5.0),  # off-delay starts
        (6, math.nan),  # cancels it; high stays active
        (7, 5.0),
        (9, 5.0),
    )
    assert short(ev) == [
        (1, "fault", "raise", 1),
        (2, "fault", "clear", 0),
        (4, "high", "raise", 1),
        (6, "fault", "raise", 1),
        (7, "fault", "clear", 0),
        (9, "high", "clear", 0),
    ]


def test_a_tag_matched_by_no_table_has_no_checks_at_all() -> None:
    engine = RuleEngine(["A", "B"], [RuleConfig(tags=("A",), high=1.0)])
    ev = engine.evaluate(
        np.array([1, 1, 0], dtype=np.int32),
        np.array([0, 1, 2], dtype=np.int64),
        np.array([math.nan, 99.0, 5.0]),
        np.array([1, 0, 0], dtype=np.uint8),
    )
    assert [(e.tag, e.alarm, e.event) for e in ev] == [(0, "high", "raise")]
    assert engine.params(1) == {}


# -- high and low -------------------------------------------------------------------------------


def test_high_raises_escalates_deescalates_and_clears_with_the_limit_crossed() -> None:
    ev = both(
        {"high": 10.0, "high_high": 20.0}, (0, 9.0), (1, 10.0), (2, 25.0), (3, 15.0), (4, 9.99)
    )
    assert short(ev) == [
        (1, "high", "raise", 1),
        (2, "high", "escalate", 2),
        (3, "high", "deescalate", 1),
        (4, "high", "clear", 0),
    ]
    assert [e.extra for e in ev] == [{"limit": 10.0}, {"limit": 20.0}, {}, {}]


def test_a_jump_straight_to_level_two_is_a_raise_carrying_the_level_two_limit() -> None:
    ev = both({"high": 10.0, "high_high": 20.0}, (0, 20.0), (1, 0.0))
    assert short(ev) == [(0, "high", "raise", 2), (1, "high", "clear", 0)]
    assert ev[0].extra == {"limit": 20.0}


def test_high_high_alone_works_as_a_single_level_two_limit() -> None:
    ev = both({"high_high": 5.0}, (0, 5.0), (1, 4.0))
    assert short(ev) == [(0, "high", "raise", 2), (1, "high", "clear", 0)]


def test_low_mirrors_high() -> None:
    ev = both(
        {"low": 5.0, "low_low": 2.0, "deadband": 1.0},
        (0, 6.0),
        (1, 5.0),
        (2, 2.0),
        (3, 3.0),  # low_low + deadband: level 2 holds
        (4, 3.1),
        (5, 6.0),  # low + deadband: level 1 holds
        (6, 6.1),
    )
    assert short(ev) == [
        (1, "low", "raise", 1),
        (2, "low", "escalate", 2),
        (4, "low", "deescalate", 1),
        (6, "low", "clear", 0),
    ]


def test_coal_face_methane_level_two_holds_until_the_value_falls_below_one_percent() -> None:
    ev = both(
        {"high": 1.0, "high_high": 1.5, "high_high_deadband": 0.5},
        (0, 0.8),
        (1, 1.2),
        (2, 1.5),
        (3, 1.2),
        (4, 1.0),
        (5, 0.99),
    )
    assert short(ev) == [
        (1, "high", "raise", 1),
        (2, "high", "escalate", 2),
        (5, "high", "clear", 0),  # at 1.0 still level 2; below 1.0 it falls straight to 0
    ]


def test_a_per_limit_deadband_overrides_the_common_deadband() -> None:
    ev = both(
        {"high": 10.0, "high_high": 20.0, "deadband": 1.0, "high_high_deadband": 5.0},
        (0, 20.0),
        (1, 15.0),  # 20 - 5: still level 2
        (2, 14.9),  # level 1 holds down to 10 - 1
        (3, 9.0),
        (4, 8.9),
    )
    assert short(ev) == [
        (0, "high", "raise", 2),
        (2, "high", "deescalate", 1),
        (4, "high", "clear", 0),
    ]


def test_on_delay_raises_only_after_the_condition_held_on_every_valid_sample() -> None:
    ev = both(
        {"high": 10.0, "high_high": 20.0, "on_delay_s": 5.0},
        (0, 11.0),
        (3, 9.0),  # breaks the condition: timer cancelled
        (4, 11.0),  # timer restarts
        (6, 25.0),  # still target > c; the timer keeps its start
        (9, 15.0),  # 5 s after 4: level becomes this sample's target (1)
        (10, 25.0),  # escalation needs its own 5 s
        (15, 25.0),
    )
    assert short(ev) == [(9, "high", "raise", 1), (15, "high", "escalate", 2)]


def test_off_delay_holds_the_alarm_until_the_lowering_has_lasted() -> None:
    ev = both(
        {"high": 10.0, "off_delay_s": 2.0},
        (0, 11.0),
        (1, 9.0),
        (2, 10.0),  # back above: off timer cancelled
        (3, 9.0),
        (4, 9.0),
        (5, 9.0),
    )
    assert short(ev) == [(0, "high", "raise", 1), (5, "high", "clear", 0)]


def test_duplicate_timestamps_keep_arrival_order_and_a_zero_delay_acts_on_the_sample() -> None:
    ev = both({"high": 10.0}, (0, 11.0), (0, 9.0), (0, 11.0))
    assert short(ev) == [(0, "high", "raise", 1), (0, "high", "clear", 0), (0, "high", "raise", 1)]


# -- latching and acknowledgement ---------------------------------------------------------------


def test_a_latched_alarm_returns_and_clears_only_when_acknowledged() -> None:
    ev = both(
        {"high": 10.0, "latch": True},
        (0, 11.0),
        (1, 9.0),
        Ack(0, 1500),
        Ack(0, 1600),  # nothing left to acknowledge
    )
    assert short(ev) == [
        (0, "high", "raise", 1),
        (1, "high", "return", 0),
        (1.5, "high", "clear", 0),
    ]
    assert ev[2].value is None


def test_acknowledging_an_active_latched_alarm_then_falling_clears_directly() -> None:
    ev = both({"high": 10.0, "latch": True}, (0, 11.0), Ack(0, 500), (1, 9.0))
    assert short(ev) == [(0, "high", "raise", 1), (0.5, "high", "ack", 1), (1, "high", "clear", 0)]


def test_escalation_makes_an_acknowledged_alarm_unacknowledged_again() -> None:
    ev = both(
        {"high": 10.0, "high_high": 20.0, "latch": True},
        (0, 11.0),
        Ack(0, 500),
        (1, 21.0),
        (2, 5.0),
        (3, 11.0),  # returned and unacknowledged: rising again is a raise
        Ack(0, 3500),
    )
    assert short(ev) == [
        (0, "high", "raise", 1),
        (0.5, "high", "ack", 1),
        (1, "high", "escalate", 2),
        (2, "high", "return", 0),
        (3, "high", "raise", 1),
        (3.5, "high", "ack", 1),
    ]


def test_without_latch_an_acknowledgement_only_emits_ack_for_active_alarms() -> None:
    ev = both(
        {"high": 10.0, "low": 0.0},
        (0, 11.0),
        Ack(0, 100),
        Ack(0, 200),
        (1, 5.0),
        Ack(0, 1100),
        (2, -1.0),
        Ack(0, 2100, "high"),
        Ack(0, 2200, "low"),
    )
    assert short(ev) == [
        (0, "high", "raise", 1),
        (0.1, "high", "ack", 1),
        (1, "high", "clear", 0),
        (2, "low", "raise", 1),
        (2.2, "low", "ack", 1),
    ]


def test_acknowledging_a_kind_that_does_not_latch_is_refused() -> None:
    engine = one_tag(high=1.0)
    with pytest.raises(ValueError, match="only high and low"):
        engine.acknowledge(0, 0, "roc")


# -- roc ----------------------------------------------------------------------------------------


def test_roc_compares_with_the_earliest_sample_inside_the_window() -> None:
    ev = both(
        {"roc_limit_per_min": 4.0, "roc_window_s": 30.0},
        (0, 0.0),
        (0, 5.0),  # reference has the sample's own timestamp: nothing changes
        (15, 1.0),  # ref (0, 0.0), the earliest: 1 / 0.25 min = 4/min
        (30, 2.0),  # ref still (0, 0.0), exactly one window old: 4/min
        (45, 2.0),  # ref (15, 1.0): 2/min
    )
    assert short(ev) == [(15, "roc", "raise", 1), (45, "roc", "clear", 0)]
    assert ev[0].extra == {"rate_per_min": 4.0}


def test_roc_window_defaults_to_sixty_seconds_and_catches_falls() -> None:
    ev = both({"roc_limit_per_min": 1.0}, (0, 10.0), (60, 9.0), (61, 9.0))
    assert short(ev) == [(60, "roc", "raise", 1), (61, "roc", "clear", 0)]
    assert ev[0].extra["rate_per_min"] == pytest.approx(-1.0)


# -- trend --------------------------------------------------------------------------------------


def test_trend_high_warns_with_an_eta_before_the_limit_and_stops_when_high_raises() -> None:
    rows = [(float(s), float(s)) for s in range(8)]  # 1 unit per second
    ev = both(
        {"high": 7.0, "trend_window_s": 10.0, "trend_horizon_s": 3.0, "trend_min_points": 3}, *rows
    )
    assert short(ev) == [
        (4, "trend_high", "raise", 1),
        (7, "high", "raise", 1),
        (7, "trend_high", "clear", 0),
    ]
    assert ev[0].extra == {"eta_s": pytest.approx(3.0)}


def test_trend_low_uses_low_low_when_low_is_not_set() -> None:
    rows = [(float(s), 10.0 - s) for s in range(6)]
    ev = both({"low_low": 2.0, "trend_window_s": 60.0, "trend_horizon_s": 10.0}, *rows)
    assert short(ev) == [(4, "trend_low", "raise", 1)]
    assert ev[0].extra == {"eta_s": pytest.approx(4.0)}


def test_trend_needs_min_points_and_distinct_timestamps() -> None:
    rows = [(0.0, 0.0), (0.0, 5.0), (0.0, 9.0), (0.0, 9.0), (0.0, 9.0), (1.0, 9.0)]
    ev = both(
        {"high": 5.0, "trend_window_s": 60.0, "trend_horizon_s": 60.0, "on_delay_s": 100.0}, *rows
    )
    assert short(ev) == [(1, "trend_high", "raise", 1)]


def test_trend_window_excludes_samples_exactly_one_window_old() -> None:
    # at t=3 the window (0, 3] holds 1, 2, 3 only: a flat line, so the warning clears
    rows = [(0.0, 0.0), (1.0, 1.0), (2.0, 1.0), (3.0, 1.0)]
    ev = both(
        {"high": 1.5, "trend_window_s": 3.0, "trend_horizon_s": 10.0, "trend_min_points": 3}, *rows
    )
    assert short(ev) == [(2, "trend_high", "raise", 1), (3, "trend_high", "clear", 0)]


# -- stuck --------------------------------------------------------------------------------------


def test_stuck_raises_after_a_flat_run_and_clears_on_the_sample_that_starts_a_new_run() -> None:
    ev = both(
        {"stuck_s": 10.0, "stuck_band": 0.5},
        (0, 5.0),
        (5, 5.5),
        (9, 4.5),
        (10, 5.2),
        (11, math.nan),  # ignored by stuck
        (12, 5.6),  # |5.6 - 5.0| > 0.5: new run
        (22, 5.6),
    )
    assert short(ev) == [
        (10, "stuck", "raise", 1),
        (11, "fault", "raise", 1),
        (12, "fault", "clear", 0),
        (12, "stuck", "clear", 0),
        (22, "stuck", "raise", 1),
    ]


# -- ordering and batching ----------------------------------------------------------------------


def test_events_of_one_sample_come_in_kind_order() -> None:
    engine = one_tag(
        high=1.0, roc_limit_per_min=1.0, trend_window_s=100.0, trend_horizon_s=1.0, stuck_s=1.0
    )
    ev = feed(engine, (0, 0.0), (1, 0.0), (1, 0.0), (2, 0.0), (3, 0.0), (4, math.nan), (5, 5.0))
    assert [e.alarm for e in ev if e.ts_ms == 5000] == ["fault", "high", "roc", "stuck"]


def test_a_sample_that_goes_back_in_time_is_processed_at_the_previous_timestamp() -> None:
    engine = one_tag(high=10.0, on_delay_s=5.0)
    ev = feed(engine, (10, 11.0), (4, 11.0), (15, 11.0))
    assert short(ev) == [(15, "high", "raise", 1)]
    assert engine.clamped_samples == 1


def test_splitting_a_stream_into_batches_does_not_change_the_events() -> None:
    engine_a = one_tag(high=1.0, roc_limit_per_min=5.0, trend_window_s=30.0, trend_horizon_s=5.0)
    engine_b = one_tag(high=1.0, roc_limit_per_min=5.0, trend_window_s=30.0, trend_horizon_s=5.0)
    rng = np.random.default_rng(7)
    n = 300
    ts = np.cumsum(rng.integers(0, 2000, n)).astype(np.int64)
    val = np.cumsum(rng.normal(0, 0.1, n))
    q = (rng.random(n) < 0.05).astype(np.uint8)
    tag = np.zeros(n, dtype=np.int32)
    whole = engine_a.evaluate(tag, ts, val, q)
    parts: list[AlarmEvent] = []
    for lo in range(0, n, 7):
        parts += engine_b.evaluate(
            tag[lo : lo + 7], ts[lo : lo + 7], val[lo : lo + 7], q[lo : lo + 7]
        )
    assert whole == parts
    assert len(whole) > 10


def test_evaluate_rejects_arrays_of_different_length_and_unknown_tags() -> None:
    engine = one_tag(high=1.0)
    z = np.zeros(2)
    with pytest.raises(ValueError, match="one length"):
        engine.evaluate(np.zeros(1, np.int32), z.astype(np.int64), z, z.astype(np.uint8))
    with pytest.raises(ValueError, match="tag index"):
        engine.evaluate(np.ones(2, np.int32), z.astype(np.int64), z, z.astype(np.uint8))


def test_warm_up_compiles_without_changing_state() -> None:
    engine = one_tag(high=1.0)
    engine.warm_up()
    assert short(feed(engine, (0, 2.0))) == [(0, "high", "raise", 1)]


def test_the_kernel_kind_codes_follow_the_alarm_kinds_in_emission_order() -> None:
    assert get_args(AlarmKind) == KINDS
    assert KINDS == ("fault", "high", "low", "roc", "trend_high", "trend_low", "stuck")
