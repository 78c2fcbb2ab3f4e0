"""How Redis operations are retried (issue 13: one retry helper for storage, Redis, Anthropic and S3), on a
MockClock: the Redis implementations over a fake redis-py client whose commands fail on cue.

* lease scripts are idempotent for the holder: an unavailable Redis is retried by the kernel's helper, every
  retry counted for ``vigil_retry_attempts_total{dependency="redis"}``
* a rate-limit hit and a PUBLISH are not (a hit whose reply was lost may have counted): tried once
* the breaker's refusal and a script error are final; no wait goes past the caller's deadline
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
import redis.exceptions as rexc
import trio
import trio.testing
import trio_asyncio
from prometheus_client import CollectorRegistry, generate_latest

from kernel import (
    NO_RETRY,
    REDIS,
    Breakers,
    BreakersConfig,
    DependencyPolicy,
    RetryAfter,
    RetryPolicy,
    seeds_breaker,
)
from storage.coordination import (
    CoordinationCircuitOpen,
    CoordinationClosed,
    CoordinationConfig,
    CoordinationError,
    CoordinationUnavailable,
    RedisConfig,
    redis_retry_decision,
)
from storage.coordination._calls import Bridge
from storage.coordination._common import Lifecycle
from storage.coordination._redis import RedisBus, RedisLeases, RedisRateLimiter
from transport import BreakerCollector

Failure = Callable[[], BaseException]


@dataclass
class FlakyRedis:
    """A redis-py client stand-in: each command fails with the next of ``failures`` (asyncio side), then
    answers ``answer``. ``calls`` counts what reached it."""

    failures: list[Failure] = field(default_factory=list)
    answer: Any = 1
    calls: int = 0

    async def _command(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)()
        return self.answer

    def register_script(self, _source: str) -> Callable[..., Any]:
        return self._command

    async def publish(self, channel: str, data: bytes) -> int:
        return int(await self._command(channel, data))

    def pubsub(self) -> object:
        return object()


def lost() -> BaseException:
    return rexc.ConnectionError("Connection closed by server.")


def breakers(retry: RetryPolicy | None = None) -> Breakers:
    redis = DependencyPolicy(breaker=seeds_breaker(call_timeout=1.0, consecutive_failures=3),
                             retry=retry or RetryPolicy())
    return Breakers(BreakersConfig(redis=redis), seed=5)


@asynccontextmanager
async def bridge_over(registry: Breakers) -> AsyncIterator[Bridge]:
    async with trio_asyncio.open_loop() as loop:
        yield Bridge(loop, RedisConfig(), Lifecycle(), dependency=registry[REDIS])


def retry_metric(registry: Breakers) -> str:
    metrics = CollectorRegistry()
    metrics.register(BreakerCollector(registry))
    lines = generate_latest(metrics).decode().splitlines()
    return next(line for line in lines if line.startswith('vigil_retry_attempts_total{dependency="redis"}'))


@pytest.mark.parametrize("error, decision", [
    (CoordinationUnavailable("redis unavailable: ConnectionError"), RetryAfter()),
    (rexc.ConnectionError("lost"), RetryAfter()),
    (rexc.TimeoutError("slow"), RetryAfter()),
    (trio.TooSlowError(), RetryAfter()),
    (CoordinationCircuitOpen("breaker open", 12.0), NO_RETRY),
    (CoordinationError("redis error: ResponseError: WRONGTYPE"), NO_RETRY),
    (CoordinationClosed("coordination context has exited"), NO_RETRY),
    (rexc.ResponseError("NOSCRIPT"), NO_RETRY),
    (ValueError("a bug"), NO_RETRY),
])
def test_unavailable_is_retryable_and_a_refusal_or_an_error_is_final(error: Exception, decision: object) -> None:
    assert redis_retry_decision(error) == decision


async def test_a_lease_acquire_is_retried_until_redis_answers_and_the_retries_are_counted(
        autojump_clock: trio.testing.MockClock) -> None:
    registry = breakers()
    redis = FlakyRedis(failures=[lost, lost])
    async with bridge_over(registry) as bridge:
        started = trio.current_time()
        assert await RedisLeases(bridge, redis, "p:").acquire("reaper", "me", 5.0)  # type: ignore[arg-type]
        waited = trio.current_time() - started
    assert redis.calls == 3 and registry[REDIS].retries == 2
    assert 0 < waited <= 0.1 + 0.2  # the policy's full-jitter waits: U(0, 0.1), then U(0, 0.2)
    assert retry_metric(registry) == 'vigil_retry_attempts_total{dependency="redis"} 2.0'
    snapshot = registry[REDIS].breaker.snapshot()
    assert (snapshot.state, snapshot.failures_total, snapshot.successes) == ("closed", 2, 1)


async def test_a_lease_gives_up_after_the_policy_attempts(autojump_clock: trio.testing.MockClock) -> None:
    registry = breakers(RetryPolicy(attempts=2))
    redis = FlakyRedis(failures=[lost, lost, lost])
    async with bridge_over(registry) as bridge:
        with pytest.raises(CoordinationUnavailable, match="ConnectionError"):
            await RedisLeases(bridge, redis, "p:").renew("reaper", "me", 5.0)  # type: ignore[arg-type]
    assert redis.calls == 2 and registry[REDIS].retries == 1


async def test_a_rate_limit_hit_is_not_retried(autojump_clock: trio.testing.MockClock) -> None:
    registry = breakers()
    redis = FlakyRedis(failures=[lost], answer=[[1, 4, 0, 60_000_000]])
    async with bridge_over(registry) as bridge:
        limiter = RedisRateLimiter(bridge, redis, "p:")  # type: ignore[arg-type]
        with pytest.raises(CoordinationUnavailable):
            await limiter.hit("ip:1", limit=5, window=60)  # its reply was lost: it may have counted
        assert redis.calls == 1 and registry[REDIS].retries == 0
        assert (await limiter.hit("ip:1", limit=5, window=60)).remaining == 4  # the next hit is a new request
    assert retry_metric(registry) == 'vigil_retry_attempts_total{dependency="redis"} 0.0'


async def test_a_publish_is_not_retried(autojump_clock: trio.testing.MockClock) -> None:
    registry = breakers()
    redis = FlakyRedis(failures=[lost])
    async with bridge_over(registry) as bridge:
        bus = RedisBus(bridge, redis, CoordinationConfig(), random.Random(1))  # type: ignore[arg-type]
        with pytest.raises(CoordinationUnavailable):
            await bus.publish("realtime", b"x")  # at most once: it may have been delivered
    assert redis.calls == 1 and registry[REDIS].retries == 0


async def test_a_script_error_is_final_and_no_failure_of_the_breaker(autojump_clock: trio.testing.MockClock) -> None:
    registry = breakers()
    redis = FlakyRedis(failures=[lambda: rexc.ResponseError("WRONGTYPE Operation against a key")])
    async with bridge_over(registry) as bridge:
        with pytest.raises(CoordinationError, match="WRONGTYPE") as raised:
            await RedisLeases(bridge, redis, "p:").acquire("reaper", "me", 5.0)  # type: ignore[arg-type]
    assert not isinstance(raised.value, CoordinationUnavailable)
    assert redis.calls == 1 and registry[REDIS].retries == 0
    assert registry[REDIS].breaker.snapshot().failures_total == 0  # Redis answered: a bug, not an outage


async def test_an_open_breaker_refuses_at_once_without_a_retry(autojump_clock: trio.testing.MockClock) -> None:
    registry = breakers(RetryPolicy(attempts=10))
    redis = FlakyRedis(failures=[lost] * 10)
    async with bridge_over(registry) as bridge:
        leases = RedisLeases(bridge, redis, "p:")  # type: ignore[arg-type]
        with pytest.raises(CoordinationCircuitOpen) as refused:
            await leases.acquire("reaper", "me", 5.0)
        # Three failures in a row open Redis' breaker; the fourth attempt is refused and not retried.
        assert redis.calls == 3 and registry[REDIS].retries == 3
        assert registry[REDIS].breaker.state == "open" and 29.0 < refused.value.retry_after <= 30.0  # minus the wait
        started = trio.current_time()
        with pytest.raises(CoordinationCircuitOpen):
            await leases.release("reaper", "me")
        assert trio.current_time() == started and redis.calls == 3  # no network, no wait


async def test_no_wait_goes_past_the_callers_deadline(autojump_clock: trio.testing.MockClock) -> None:
    registry = breakers(replace(RetryPolicy(), attempts=5, initial=100.0, cap=100.0))
    redis = FlakyRedis(failures=[lost] * 5)
    async with bridge_over(registry) as bridge:
        started = trio.current_time()
        with trio.fail_after(1.0), pytest.raises(CoordinationUnavailable, match="ConnectionError"):
            await RedisLeases(bridge, redis, "p:").acquire("reaper", "me", 5.0)  # type: ignore[arg-type]
        # The drawn wait would end past the deadline: the real reason now, not a Cancelled later.
        assert trio.current_time() == started
    assert redis.calls == 1 and registry[REDIS].retries == 0
