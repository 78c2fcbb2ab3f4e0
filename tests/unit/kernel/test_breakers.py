"""The dependencies' breakers (kernel.Breakers) with the seeds' numbers, each transition under MockClock, the
slow-call rule, the telemetry event and log line of every transition, and the retry helper around them."""

from __future__ import annotations

import logging
import random

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from kernel import (
    ANTHROPIC,
    NO_RETRY,
    POSTGRES,
    REDIS,
    S3,
    BreakerChanged,
    Breakers,
    BreakersConfig,
    CircuitOpen,
    Dependency,
    RetryAfter,
    RetryDecision,
    RetryPolicy,
    Telemetry,
    call_outcome,
    seeds_breaker,
)


class Down(Exception):
    pass


async def _fail(dep: Dependency) -> None:
    with pytest.raises(Down):
        async with dep.breaker.guard():
            raise Down


async def _ok(dep: Dependency, seconds: float = 0.0) -> None:
    async with dep.breaker.guard():
        await trio.sleep(seconds)


def test_the_seeds_numbers() -> None:
    config = BreakersConfig()
    for name in (POSTGRES, REDIS, ANTHROPIC, S3):
        b = config.policies()[name].breaker
        assert (b.window, b.min_calls, b.failure_rate, b.open_for, b.half_open_probes) == (10.0, 5, 0.5, 30.0, 3)
    assert config.postgres.breaker.call_timeout == 5.0
    assert config.redis.breaker.call_timeout == 1.0
    assert config.redis.breaker.consecutive_failures == 3
    assert config.postgres.retry == RetryPolicy(attempts=3, initial=0.1, multiplier=2.0, cap=5.0)


@given(elapsed=st.floats(0, 100), timeout=st.floats(0.001, 50), failed=st.booleans())
def test_a_call_past_its_timeout_is_a_failure(elapsed: float, timeout: float, failed: bool) -> None:
    outcome = call_outcome(failed, elapsed, seeds_breaker(call_timeout=timeout))
    assert outcome == ("failure" if failed or elapsed > timeout else "success")


async def test_closed_to_open_by_failure_rate_over_at_least_five_calls(
        autojump_clock: trio.testing.MockClock) -> None:
    dep = Breakers()[POSTGRES]
    for _ in range(2):
        await _ok(dep)
    await _fail(dep)
    await _fail(dep)
    assert dep.breaker.snapshot().state == "closed"  # 2 of 4: too few calls for the rate
    await _fail(dep)  # 3 of 5 >= 50 %
    assert dep.breaker.snapshot().state == "open"


async def test_the_window_forgets_old_outcomes(autojump_clock: trio.testing.MockClock) -> None:
    dep = Breakers()[POSTGRES]
    for _ in range(4):
        await _fail(dep)
        await _ok(dep)  # never 5 in a row; 50 % only if the window held them all
        await trio.sleep(6.0)
    # Only the outcomes of the last 10 s count: never more than 4 calls, below min_calls (8 together: 50 %).
    assert dep.breaker.snapshot().state == "closed"
    assert dep.breaker.snapshot().calls == 2  # the last round only (the clock moved on 6 s since)


async def test_redis_opens_on_three_consecutive_failures(autojump_clock: trio.testing.MockClock) -> None:
    dep = Breakers()[REDIS]
    for _ in range(10):
        await _ok(dep)
    await _fail(dep)
    await _fail(dep)
    assert dep.breaker.snapshot().state == "closed"
    await _fail(dep)  # 3 in a row, though only 3 of 13 calls failed
    assert dep.breaker.snapshot().state == "open"


async def test_slow_calls_open_it(autojump_clock: trio.testing.MockClock) -> None:
    dep = Breakers()[REDIS]
    for _ in range(3):
        await _ok(dep, seconds=1.5)  # succeeded, but past Redis's 1 s call timeout
    snap = dep.breaker.snapshot()
    assert snap.state == "open" and snap.failures_total == 3 and snap.successes == 0
    dep = Breakers()[REDIS]
    for _ in range(5):
        await _ok(dep, seconds=0.9)
    assert dep.breaker.snapshot().state == "closed"


async def test_open_rejects_fast_then_half_open_admits_three_probes(autojump_clock: trio.testing.MockClock) -> None:
    dep = Breakers()[POSTGRES]
    for _ in range(5):
        await _fail(dep)
    opened = trio.current_time()
    with pytest.raises(CircuitOpen) as refused:
        await _ok(dep)
    assert refused.value.retry_after == pytest.approx(30.0) and refused.value.name == POSTGRES
    await trio.sleep(29.0)
    assert dep.breaker.snapshot().state == "open" and dep.breaker.seconds_open() == pytest.approx(1.0)
    await trio.sleep_until(opened + 30.0)
    assert dep.breaker.snapshot().state == "half_open" and dep.breaker.seconds_open() == 0.0
    assert [dep.breaker.allow() for _ in range(4)] == [True, True, True, False]  # at most 3 probes
    dep.breaker.record_success()
    assert dep.breaker.snapshot().state == "closed"
    snap = dep.breaker.snapshot()
    assert snap.rejected == 2 and snap.requests == 6 and snap.successes == 1 and snap.failures_total == 5


async def test_a_failed_probe_opens_it_again(autojump_clock: trio.testing.MockClock) -> None:
    dep = Breakers()[REDIS]
    for _ in range(3):
        await _fail(dep)
    await trio.sleep(30.0)
    await _fail(dep)  # the probe
    assert dep.breaker.snapshot().state == "open"
    assert dep.breaker.seconds_open() == pytest.approx(30.0)
    await trio.sleep(30.0)
    await _ok(dep)
    assert dep.breaker.snapshot().state == "closed"


async def test_every_transition_is_a_telemetry_event_and_a_log_line(
        autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture) -> None:
    breakers = Breakers()
    telemetry = Telemetry()
    breakers.publish_to(telemetry)
    dep = breakers[REDIS]
    caplog.set_level(logging.INFO, logger="vigil.breakers")
    async with telemetry.subscribe(kinds=["breaker_changed"]) as events:
        for _ in range(3):
            await _fail(dep)
        await trio.sleep(30.0)
        await _fail(dep)
        await trio.sleep(30.0)
        await _ok(dep)
        seen = telemetry.drain(events)
    assert all(isinstance(e, BreakerChanged) and e.path == "breakers/redis" for e in seen)
    moves = [(e.breaker, e.from_state, e.to_state) for e in seen if isinstance(e, BreakerChanged)]
    assert moves == [("redis", "closed", "open"), ("redis", "open", "half_open"), ("redis", "half_open", "open"),
                     ("redis", "open", "half_open"), ("redis", "half_open", "closed")]
    logged = [r.__dict__["fields"] for r in caplog.records if r.name == "vigil.breakers"]
    assert logged == [{"breaker": b, "from": f, "to": t} for b, f, t in moves]


async def test_call_retries_transient_errors_counts_them_and_never_retries_a_refusal(
        autojump_clock: trio.testing.MockClock) -> None:
    breakers = Breakers(seed=3)
    dep = breakers[S3]
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise Down
        return "stored"

    def classify(error: Exception) -> RetryDecision:
        return RetryAfter() if isinstance(error, Down) else NO_RETRY

    assert await dep.call(flaky, classify=classify) == "stored"
    assert calls == 3 and dep.retries == 2
    while dep.breaker.snapshot().state == "closed":
        await _fail(dep)
    calls = 0
    with pytest.raises(CircuitOpen):
        await dep.call(flaky, classify=lambda _e: RetryAfter())
    assert calls == 0 and dep.retries == 2  # refused at once, not retried


async def test_registry_is_per_instance_and_seedable() -> None:
    a, b = Breakers(seed=1), Breakers(seed=1)
    assert a[POSTGRES] is not b[POSTGRES]
    assert a[POSTGRES].rng.random() == b[POSTGRES].rng.random()
    assert {d.name for d in a} == {POSTGRES, REDIS, ANTHROPIC, S3} and "nope" not in a
    assert set(a.snapshots()) == {POSTGRES, REDIS, ANTHROPIC, S3}
    assert random.Random(1).random() != a[REDIS].rng.random()  # one source shared by all dependencies


async def test_call_counts_only_the_named_failures(autojump_clock: trio.testing.MockClock) -> None:
    """Storage and Redis name their unavailability: a refused connection is a failure, an answer (a
    constraint error) is not, a cancelled call counts for nothing, and a continuation is never refused."""
    breaker = Breakers()[REDIS].breaker

    async def raises(error: BaseException) -> None:
        raise error

    with pytest.raises(ValueError):
        await breaker.call(raises, ValueError("the server answered no"), failures=Down)
    assert breaker.snapshot().successes == 1
    with trio.move_on_after(1.0):
        await breaker.call(trio.sleep_forever, failures=Down)
    assert breaker.snapshot().requests == 1  # the cancelled call: no outcome
    for _ in range(3):
        with pytest.raises(Down):
            await breaker.call(raises, Down(), failures=Down)
    with pytest.raises(CircuitOpen):
        await breaker.call(trio.sleep, 0)
    assert await breaker.call(trio.sleep, 0, admit=False) is None  # reports, never refused
    assert breaker.snapshot().failures_total == 3 and breaker.snapshot().rejected == 1
