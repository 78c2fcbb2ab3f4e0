"""The retry helper: pure delays (property-tested) and the trio shell under MockClock."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from kernel import (
    NO_RETRY,
    RetryAfter,
    RetryDecision,
    RetryPolicy,
    http_status_decision,
    parse_retry_after,
    retry_call,
    retry_delay,
)


class Transient(Exception):
    pass


class Final(Exception):
    pass


def classify(error: Exception) -> RetryDecision:
    return RetryAfter() if isinstance(error, Transient) else NO_RETRY


@given(retry=st.integers(0, 200), draw=st.floats(0, 1, exclude_max=True),
       initial=st.floats(0, 10), cap=st.floats(0, 60))
def test_full_jitter_stays_under_the_capped_exponential(retry: int, draw: float, initial: float, cap: float) -> None:
    policy = RetryPolicy(initial=initial, cap=cap)
    delay = retry_delay(policy, retry, draw)
    assert 0.0 <= delay <= min(cap, initial * 2.0 ** min(retry, 64))


@given(retry=st.integers(0, 20), draw=st.floats(0, 1, exclude_max=True), hint=st.floats(0, 1000))
def test_a_server_hint_is_a_floor(retry: int, draw: float, hint: float) -> None:
    assert retry_delay(RetryPolicy(), retry, draw, hint) >= hint


def test_status_classification() -> None:
    assert http_status_decision(503) == RetryAfter(None)
    assert http_status_decision(429, 2.0) == RetryAfter(2.0)
    for status in (400, 401, 403, 404, 409, 413, 422):
        assert http_status_decision(status) is NO_RETRY


def test_retry_after_parsing() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0


async def _flaky(failures: list[Exception], calls: list[float]) -> str:
    calls.append(trio.current_time())
    if failures:
        raise failures.pop(0)
    return "ok"


def run(fn: object) -> object:
    return trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0))  # type: ignore[arg-type]


def test_retries_transient_errors_with_backoff_then_succeeds() -> None:
    calls: list[float] = []
    seen: list[tuple[int, float]] = []

    failures: list[Exception] = [Transient(), Transient()]

    async def main() -> str:
        return await retry_call(lambda: _flaky(failures, calls), policy=RetryPolicy(),
                                classify=classify, rng=random.Random(1),
                                on_retry=lambda n, delay, _e: seen.append((n, delay)))

    assert run(main) == "ok"
    assert len(calls) == 3
    assert [n for n, _ in seen] == [0, 1]
    assert 0 <= seen[0][1] <= 0.1 and 0 <= seen[1][1] <= 0.2
    assert calls[1] - calls[0] == pytest.approx(seen[0][1])


def test_gives_up_after_the_attempts_and_raises_the_last_error() -> None:
    calls: list[float] = []

    failures: list[Exception] = [Transient("first"), Transient("second"), Transient("third")]

    async def main() -> None:
        with pytest.raises(Transient, match="third"):
            await retry_call(lambda: _flaky(failures, calls),
                             policy=RetryPolicy(attempts=3), classify=classify, rng=random.Random(2))

    run(main)
    assert len(calls) == 3


def test_a_final_error_is_not_retried() -> None:
    calls: list[float] = []

    async def main() -> None:
        with pytest.raises(Final):
            await retry_call(lambda: _flaky([Final()], calls), policy=RetryPolicy(), classify=classify,
                             rng=random.Random(3))

    run(main)
    assert len(calls) == 1


def test_a_wait_past_the_callers_deadline_fails_now_with_the_real_error() -> None:
    calls: list[float] = []

    async def main() -> None:
        with trio.move_on_after(1.0):
            with pytest.raises(Transient):
                await retry_call(lambda: _flaky([Transient(), Transient()], calls), policy=RetryPolicy(),
                                 classify=lambda _e: RetryAfter(30.0), rng=random.Random(4))
            assert trio.current_time() < 1.0  # did not sleep into the cancellation

    run(main)
    assert len(calls) == 1


def test_cancellation_is_never_retried() -> None:
    calls: list[float] = []

    async def hangs() -> str:
        calls.append(trio.current_time())
        await trio.sleep_forever()
        raise AssertionError

    async def main() -> None:
        with trio.move_on_after(5.0) as scope:
            await retry_call(hangs, policy=RetryPolicy(attempts=5), classify=lambda _e: RetryAfter(),
                             rng=random.Random(5))
        assert scope.cancelled_caught

    run(main)
    assert len(calls) == 1
