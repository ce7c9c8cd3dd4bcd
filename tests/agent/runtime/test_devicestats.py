"""DevicePoll's percentiles: the same figures as numpy's default (linear) method, without it."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from agent.runtime.devicestats import WINDOW, DevicePoll

durations = st.lists(
    st.floats(min_value=0.0, max_value=30.0, allow_nan=False), min_size=1, max_size=WINDOW + 40
)


@given(durations, st.sampled_from([0.0, 1.0, 50.0, 95.0, 99.0, 100.0]))
def test_percentile_is_numpys_linear_percentile_over_the_window(xs: list[float], q: float) -> None:
    d = DevicePoll()
    d.durations_s.extend(xs)
    window = xs[-WINDOW:]  # the ring keeps the last WINDOW polls
    got = d.percentile_ms(q)
    want = float(np.percentile(np.asarray(window), q)) * 1000.0
    assert got is not None
    assert abs(got - want) <= 1e-9 * max(1.0, abs(want))


def test_no_polls_no_percentile() -> None:
    assert DevicePoll().percentile_ms(95) is None


def test_one_poll_is_every_percentile() -> None:
    d = DevicePoll()
    d.durations_s.append(0.004)
    assert d.percentile_ms(50) == d.percentile_ms(95) == 4.0
