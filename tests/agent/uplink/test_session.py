"""The uplink's session core without a broker: window, outcomes, backoff, state and will.

The session is pure (no sockets, no paho, no asyncio), so these drive it with generated event
sequences and check the invariants its docstring states.
"""

from __future__ import annotations

import random
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.codec import decode_state
from agent.uplink.session import (
    REASON_LOST,
    Outcome,
    PublishResult,
    Session,
    backoff_delay,
    outcome_of,
)


def make(*, max_inflight: int = 4, uniform: Any = None, clock: list[int] | None = None) -> Session:
    now = clock if clock is not None else [1000]
    return Session(
        agent_version="1.0",
        max_inflight=max_inflight,
        reconnect_min_s=0.5,
        reconnect_max_s=8.0,
        uniform=uniform or random.Random(1).uniform,
        clock_ms=lambda: now[0],
    )


def state(payload: bytes) -> dict[str, Any]:
    doc = msgspec.structs.asdict(decode_state(payload))
    assert doc.pop("encoding") is None  # not announced: make() passes no encoding
    return doc


# -- outcomes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (0x00, Outcome.ACCEPTED),
        (0x10, Outcome.ACCEPTED),  # no matching subscribers: the broker has it
        (0x7F, Outcome.ACCEPTED),
        (0x80, Outcome.REJECTED),
        (0x87, Outcome.REJECTED),
        (0x97, Outcome.REJECTED),
        (None, Outcome.LOST),
    ],
)
def test_a_puback_reason_code_maps_to_one_outcome(code: int | None, outcome: Outcome) -> None:
    assert outcome_of(code) is outcome


def test_a_result_says_its_outcome_as_flags_and_as_the_enum() -> None:
    s = make()
    s.accepted()
    for mid, token in ((1, "ok"), (2, "denied"), (3, "lost")):
        s.sent(mid, token)
    assert s.acked(1, 0x00, "Success")
    assert s.acked(2, 0x87, "Not authorized")
    s.ended()
    ok, denied, lost = s.take_results()
    assert ok == PublishResult("ok", True, "success", False, 0x00)
    assert denied == PublishResult("denied", False, "not authorized", False, 0x87)
    assert lost == PublishResult("lost", False, REASON_LOST, True, None)
    assert [r.outcome for r in (ok, denied, lost)] == [
        Outcome.ACCEPTED,
        Outcome.REJECTED,
        Outcome.LOST,
    ]
    st_ = s.stats()
    assert (st_.published, st_.accepted, st_.rejected, st_.lost) == (3, 1, 1, 1)


def test_a_puback_nobody_waits_for_changes_nothing() -> None:
    s = make()
    s.accepted()
    s.sent(5, "t")
    assert not s.acked(6, 0x00, "Success")  # the adapter's own state/meta publish
    assert s.inflight == 1
    assert s.take_results() == []
    s.ended()
    assert not s.acked(5, 0x00, "Success")  # an answer from a connection that ended
    assert [r.outcome for r in s.take_results()] == [Outcome.LOST]


def test_sent_refuses_what_would_misattribute_an_answer_and_room_counts_down() -> None:
    s = make(max_inflight=2)
    with pytest.raises(ValueError, match="not connected"):
        s.sent(1, "a")
    s.accepted()
    assert s.room == 2
    s.sent(1, "a")
    with pytest.raises(ValueError, match="already in flight"):
        s.sent(1, "b")
    s.sent(2, "b")
    assert s.room == 0
    s.sent(3, "c")  # beyond the window: the transport queues it; still owed one answer
    assert (s.room, s.inflight) == (0, 3)
    s.ended()
    assert s.room == 0
    assert [r.token for r in s.take_results()] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="at least 1"):
        make(max_inflight=0)


_ops = st.lists(
    st.one_of(
        st.just(("connect",)),
        st.just(("refuse",)),
        st.just(("end",)),
        st.tuples(st.just("send"), st.integers(1, 12)),
        st.tuples(st.just("ack"), st.integers(1, 12), st.sampled_from([0x00, 0x10, 0x87, 0x97])),
        st.just(("take",)),
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(ops=_ops, window=st.integers(1, 6))
def test_every_token_gets_exactly_one_result_and_the_window_holds(
    ops: list[tuple[Any, ...]], window: int
) -> None:
    s = make(max_inflight=window)
    handed: list[int] = []  # tokens the session accepted
    answered: list[PublishResult] = []
    mids: dict[int, int] = {}  # mid -> token, as the broker would see them
    token = 0
    for op in ops:
        if op[0] == "connect" and not s.connected:
            s.accepted()
        elif op[0] == "refuse":
            s.refused()
        elif op[0] == "end":
            s.ended()
            mids.clear()
        elif op[0] == "send" and s.room > 0 and op[1] not in mids:
            token += 1
            s.sent(op[1], token)
            mids[op[1]] = token
            handed.append(token)
        elif op[0] == "ack":
            was = mids.pop(op[1], None)
            assert s.acked(op[1], op[2], "x") == (was is not None)
        elif op[0] == "take":
            answered.extend(s.take_results())
        assert 0 <= s.inflight <= window
        assert s.connected or s.inflight == 0
        assert s.room == (window - s.inflight if s.connected else 0)
    s.ended()
    answered.extend(s.take_results())
    assert sorted(r.token for r in answered) == handed  # exactly one each, none invented
    stats = s.stats()
    assert stats.published == len(handed) == stats.accepted + stats.rejected + stats.lost
    for r in answered:
        assert r.outcome is outcome_of(r.reason_code)


# -- backoff -------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    attempt=st.integers(0, 200),
    lo=st.floats(0.01, 30.0),
    hi=st.floats(0.01, 600.0),
    u=st.floats(0.0, 1.0),
)
def test_a_backoff_delay_stays_in_its_doubling_window(
    attempt: int, lo: float, hi: float, u: float
) -> None:
    d = backoff_delay(attempt, lo, hi, lambda a, b: a + u * (b - a))
    window = min(max(hi, lo), lo * 2.0 ** min(attempt + 1, 62))
    assert lo <= d <= window
    assert d <= max(lo, hi)


def test_the_session_backoff_doubles_to_max_and_a_connack_resets_it() -> None:
    s = make(uniform=lambda a, b: b)  # the top of every window
    assert [s.next_delay() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    s.accepted()
    assert s.next_delay() == 1.0  # reset by the CONNACK
    s.refused()  # a refusal is not a success: the window keeps growing
    assert s.next_delay() == 2.0


def test_the_session_backoff_uses_the_whole_window() -> None:
    s = make(uniform=random.Random(3).uniform)
    draws = []
    for _ in range(300):
        s.accepted()
        s.next_delay()  # attempt 0
        draws.append(s.next_delay())  # attempt 1: window [0.5, 2.0]
    assert min(draws) < 0.8
    assert max(draws) > 1.7


# -- state and will --------------------------------------------------------------------------


def test_the_will_carries_the_next_session_and_the_time_its_attempt_began() -> None:
    clock = [1000]
    s = make(clock=clock)
    will = s.attempt()
    assert state(will) == {"online": False, "ts": 1000, "session": 1, "agent": "1.0"}
    clock[0] = 2000
    assert s.accepted() == 1
    assert state(s.state(online=True)) == {
        "online": True,
        "ts": 2000,
        "session": 1,
        "agent": "1.0",
    }
    assert s.ended()
    assert not s.ended()  # an attempt that never got a CONNACK is not a disconnect
    clock[0] = 3000
    assert state(s.attempt())["session"] == 2
    assert state(s.state(online=False)) == {
        "online": False,
        "ts": 3000,
        "session": 1,
        "agent": "1.0",
    }
    stats = s.stats()
    assert (stats.connects, stats.sessions, stats.disconnects) == (2, 1, 1)
