"""Model-based tests: the engine and the naive twin emit identical events on generated traces.

Generated data sits on a grid (values in halves, times in quarter seconds, integer limits) so
that exact ties (``v == high``, ``|rate| == limit``, ``t - start == delay``) happen often and
the tie rules of RULES.md get exercised. Trend tags shift their limits by an irrational-looking
offset: the twin fits the trend with exact rationals, the engine with running float sums, and a
predicted value exactly on a limit would be decided by rounding rather than by the text.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rules import RuleEngine, check_rules
from rules.config import RuleConfig
from tests.rules.harness import Ack, Batch, Op, Sample, events_match, run_engine, run_naive
from tests.rules.naive import NaiveEngine

TREND_OFFSET = 0.3141592653589793
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def tag_params(draw: st.DrawFn) -> dict[str, Any]:
    p: dict[str, Any] = {}
    a, b, c, d = sorted(draw(st.lists(st.integers(-4, 12), min_size=4, max_size=4)))
    if b == c:
        c += 1
        d = max(c, d)
    trend = draw(st.booleans())
    off = TREND_OFFSET if trend else 0.0
    for key, val in (("low_low", a), ("low", b), ("high", c), ("high_high", d)):
        if draw(st.booleans()):
            p[key] = val + off
    halves = st.integers(0, 4).map(lambda x: x / 2)
    for key in (
        "deadband",
        "high_deadband",
        "high_high_deadband",
        "low_deadband",
        "low_low_deadband",
    ):
        if draw(st.integers(0, 3)) == 0:
            p[key] = draw(halves)
    for key in ("on_delay_s", "off_delay_s"):
        if draw(st.booleans()):
            p[key] = draw(st.sampled_from([0.0, 0.25, 1.0, 2.5, 5.0]))
    if draw(st.booleans()):
        p["latch"] = draw(st.booleans())
    if draw(st.integers(0, 3)) == 0:
        lo = draw(st.integers(-6, 6))
        p["range"] = (float(lo), float(lo + draw(st.integers(1, 14))))
    if draw(st.booleans()):
        p["roc_limit_per_min"] = draw(st.sampled_from([0.5, 1.0, 6.0, 30.0, 120.0]))
        if draw(st.booleans()):
            p["roc_window_s"] = draw(st.sampled_from([0.5, 1.0, 2.0, 5.0, 60.0]))
    if trend and any(k in p for k in ("low_low", "low", "high", "high_high")):
        p["trend_window_s"] = draw(st.sampled_from([1.0, 2.0, 5.0, 20.0]))
        p["trend_horizon_s"] = draw(st.sampled_from([0.5, 2.0, 10.0, 60.0]))
        if draw(st.booleans()):
            p["trend_min_points"] = draw(st.integers(3, 6))
    if draw(st.booleans()):
        p["stuck_s"] = draw(st.sampled_from([0.25, 1.0, 3.0]))
        if draw(st.booleans()):
            p["stuck_band"] = draw(halves)
    return p


@st.composite
def traces(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[Op]]:
    n_tags = draw(st.integers(1, 3))
    params = [draw(tag_params()) for _ in range(n_tags)]
    clock = [draw(st.integers(0, 10**6)) * 250 for _ in range(n_tags)]
    finite = st.integers(-12, 30).map(lambda x: x / 2)
    not_finite = st.sampled_from([math.nan, math.inf, -math.inf])
    ops: list[Op] = []
    for _ in range(draw(st.integers(0, 80))):
        kind = draw(st.integers(0, 19))
        k = draw(st.integers(0, n_tags - 1))
        if kind == 0:
            ops.append(Ack(k, clock[k], draw(st.sampled_from([None, "high", "low"]))))
        elif kind == 1:
            ops.append(Batch())
        else:
            # -1000: a clock step back, processed at the previous timestamp (docs/rules.md)
            clock[k] += draw(st.sampled_from([0, 0, 250, 500, 1000, 1000, 2000, 5000, -1000]))
            value = draw(not_finite if draw(st.integers(0, 11)) == 0 else finite)
            ops.append(Sample(k, clock[k], value, draw(st.integers(0, 11)) > 0))
    return params, ops


def build(params: list[dict[str, Any]]) -> RuleEngine:
    names = [f"T{k}" for k in range(len(params))]
    rules = [RuleConfig(tags=(names[k],), **p) for k, p in enumerate(params) if p]
    assert check_rules(rules, names) == []
    return RuleEngine(names, rules)


@SETTINGS
@given(traces())
def test_engine_and_naive_twin_emit_identical_events(trace: tuple[list[Any], list[Op]]) -> None:
    params, ops = trace
    engine = build(params)
    got = run_engine(engine, ops)
    want = run_naive(NaiveEngine(params), ops)
    assert events_match(got, want), f"\nengine {got}\ntwin   {want}"


@SETTINGS
@given(traces())
def test_engine_params_are_the_configured_keys(trace: tuple[list[Any], list[Op]]) -> None:
    params, _ = trace
    engine = build(params)
    assert [engine.params(k) for k in range(len(params))] == params


@SETTINGS
@given(traces())
def test_every_event_level_and_ack_pattern_is_consistent(trace: tuple[list[Any], list[Op]]) -> None:
    """Invariants that hold whatever the trace: levels 0..2, raises of level > 0 only, a clear
    or return always has level 0, and per alarm the events alternate sensibly."""
    params, ops = trace
    events = run_engine(build(params), ops)
    level: dict[tuple[int, str], int] = {}
    for e in events:
        key = (e.tag, e.alarm)
        before = level.get(key, 0)
        assert 0 <= e.level <= 2
        if e.event == "raise":
            assert before == 0 and e.level > 0
        elif e.event == "escalate":
            assert 0 < before < e.level
        elif e.event == "deescalate":
            assert 0 < e.level < before
        elif e.event in ("clear", "return"):
            assert e.level == 0
        elif e.event == "ack":
            assert e.level == before > 0 and e.value is None
        level[key] = e.level


@SETTINGS
@given(traces())
def test_open_tags_are_exactly_the_tags_whose_exported_state_holds_alarms(
    trace: tuple[list[Any], list[Op]],
) -> None:
    params, ops = trace
    engine = build(params)
    run_engine(engine, ops)
    assert engine.open_tags() == [k for k in range(len(params)) if engine.export_state(k).alarms]
