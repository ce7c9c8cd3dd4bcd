"""Bounds applied to received commands before and while parsing (no broker: pure functions and
the inbox driven by hand; the running agent is in test_commands_hostile.py)."""

from __future__ import annotations

import asyncio
import json
import time

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.commands import CommandResult
from agent.commands.inbox import CommandInbox
from agent.commands.limits import ECHO_MAX, MAX_DEPTH, TokenBucket, check_nesting, echo


def nested(depth: int, open_: str = "[", close: str = "]") -> bytes:
    return (open_ * depth + close * depth).encode()


@pytest.mark.parametrize("depth", [0, 1, MAX_DEPTH - 1, MAX_DEPTH])
def test_nesting_up_to_the_limit_passes(depth: int) -> None:
    assert check_nesting(nested(depth))
    assert check_nesting(b'{"a":' * depth + b"1" + b"}" * depth)


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 2000, 8192])  # 8192: 16 KiB, the size cap
def test_nesting_beyond_the_limit_is_refused_cheaply(depth: int) -> None:
    raw = nested(depth)
    t0 = time.perf_counter()
    assert not check_nesting(raw)
    assert time.perf_counter() - t0 < 0.05


def test_brackets_inside_strings_do_not_count() -> None:
    doc = {"id": "[" * 5000 + '\\"{{{' + "]" * 10, "a": [[1]]}
    assert check_nesting(json.dumps(doc).encode())


def test_escaped_quotes_cannot_hide_brackets() -> None:
    # the string ends at the real quote: the brackets after it are structure
    raw = b'{"a": "x\\\\"' + b"[" * 20 + b"]" * 20 + b"}"
    assert not check_nesting(raw)


def test_unbalanced_is_refused() -> None:
    assert not check_nesting(b"[" * (MAX_DEPTH + 5))


def test_pathological_unterminated_strings_stay_linear() -> None:
    raw = b'"' + b'\\"' * 8000 + b"[" * 20
    t0 = time.perf_counter()
    check_nesting(raw)
    assert time.perf_counter() - t0 < 0.05


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none() | st.integers() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
        max_leaves=30,
    )
)
def test_check_nesting_agrees_with_the_real_depth(value: object) -> None:
    def depth(v: object) -> int:
        if isinstance(v, list):
            return 1 + max((depth(x) for x in v), default=0)
        if isinstance(v, dict):
            return 1 + max((depth(x) for x in v.values()), default=0)
        return 0

    assert check_nesting(msgspec.json.encode(value)) == (depth(value) <= MAX_DEPTH)


def test_echo_is_short_and_always_encodable() -> None:
    assert len(echo("x" * 10_000)) == ECHO_MAX + 1
    assert echo("\ud800abc").encode("utf-8")
    assert echo(12) == "12"


def test_token_bucket_bounds_the_rate() -> None:
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    assert sum(bucket.take(0.0) for _ in range(100)) == 5
    assert sum(bucket.take(1.0) for _ in range(100)) == 5  # refilled to the burst, not 10
    assert bucket.wait_s(1.0) == pytest.approx(0.1)


def _result(raw: bytes) -> CommandResult:
    return CommandResult("i", "ok", raw.decode(errors="replace")[:10], 0)


def test_offer_drops_oversized_and_overflow_and_counts_them() -> None:
    async def main() -> CommandInbox:
        inbox = CommandInbox(handle=_result, publish=lambda b: True, max_bytes=100, queue_max=3)
        inbox.offer(b"x" * 101)
        for _ in range(10):
            inbox.offer(b"ok")
        return inbox

    inbox = asyncio.run(main())
    assert inbox.dropped["too_large"] == 1 and inbox.dropped["queue_full"] == 7
    assert inbox.queued == 3


def test_the_worker_does_bounded_work_per_iteration_and_per_second() -> None:
    published: list[bytes] = []
    reports: list[tuple[str, int]] = []

    async def main() -> tuple[list[int], CommandInbox]:
        inbox = CommandInbox(
            handle=_result,
            publish=lambda b: (published.append(b), len(published) <= 50)[1],
            report=lambda r, n: reports.append((r, n)),
            queue_max=1000,
            max_per_s=200,
            batch=8,
            report_interval_s=0.2,
        )
        for _ in range(400):
            inbox.offer(b"{}")
        ticks: list[int] = []
        task = asyncio.create_task(inbox.run())
        t0 = time.monotonic()
        before = inbox.answered
        for _ in range(20):
            await asyncio.sleep(0)
            ticks.append(inbox.answered - before)
            before = inbox.answered
        await asyncio.sleep(1.0 - (time.monotonic() - t0))
        task.cancel()
        inbox.close()
        return ticks, inbox

    ticks, inbox = asyncio.run(main())
    assert max(ticks) <= 8  # one batch between two yields of the loop
    assert 150 <= inbox.answered <= 260  # ~200/s for ~1 s (+ the initial burst)
    assert inbox.answered == len(published)
    assert inbox.dropped["result_dropped"] == inbox.answered - 50
    assert inbox.dropped["stopped"] == 400 - inbox.answered
    assert len([r for r, _ in reports if r == "result_dropped"]) <= 6  # ≤ 1 per 0.2 s, +close
    assert sum(n for r, n in reports if r == "result_dropped") == inbox.dropped["result_dropped"]
    assert sum(n for r, n in reports if r == "stopped") == inbox.dropped["stopped"]
