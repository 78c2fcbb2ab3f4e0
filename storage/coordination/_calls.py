"""How one Redis operation runs: the trio→asyncio crossing, the Redis breaker and the kernel's one retry helper.

    Bridge.call(fn)        idempotent: each attempt through the breaker; an unavailable Redis is tried again
                           (the dependency's RetryPolicy, each retry counted in vigil_retry_attempts_total),
                           never past the caller's deadline; the breaker's refusal is final at once
    Bridge.call_once(fn)   not idempotent (a rate-limit hit, a PUBLISH): one attempt through the breaker
    Bridge.call_unchecked  neither: the pub/sub listener's long reads and closing connections

redis-py's own retry is off (the pool's ``Retry`` makes no retries): this is the one retry layer, so a failure
is retried once per policy and counted once, never ``redis-py retries × ours``.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import redis.exceptions as rexc
import trio
import trio_asyncio

from kernel import (
    NO_RETRY,
    CircuitBreaker,
    CircuitOpen,
    Dependency,
    RetryAfter,
    RetryDecision,
    RetryPolicy,
    retry_call,
)

from ._common import Lifecycle
from ._config import RedisConfig
from ._errors import CoordinationCircuitOpen, CoordinationError, CoordinationUnavailable

__all__ = ["Bridge", "redis_retry_decision", "translate"]

T = TypeVar("T")

# Server-side refusals that mean "not serving right now" rather than "you asked wrongly".
_UNAVAILABLE: tuple[type[Exception], ...] = (
    rexc.ConnectionError,  # includes AuthenticationError, BusyLoadingError, MaxConnectionsError
    rexc.TimeoutError,
    rexc.ReadOnlyError,
    rexc.TryAgainError,
    rexc.ClusterDownError,
    rexc.MasterDownError,
    OSError,
)


def translate(exc: BaseException) -> CoordinationError:
    if isinstance(exc, _UNAVAILABLE):
        return CoordinationUnavailable(f"redis unavailable: {type(exc).__name__}: {exc}")
    return CoordinationError(f"redis error: {type(exc).__name__}: {exc}")


def redis_retry_decision(error: Exception) -> RetryDecision:
    """Redis unreachable, timed out or not serving is worth another try; the breaker's refusal (it says when a
    probe may go: ``retry_after``) and any other error (a script error, a wrong type: a bug, the same next
    time) are final."""
    if isinstance(error, CoordinationCircuitOpen | CircuitOpen):
        return NO_RETRY
    if isinstance(error, (CoordinationUnavailable, trio.TooSlowError, *_UNAVAILABLE)):
        return RetryAfter()
    return NO_RETRY


class Bridge:
    """The single trio→asyncio crossing point: loop, breaker, retries, deadline, error translation."""

    def __init__(self, loop: asyncio.AbstractEventLoop, config: RedisConfig, lifecycle: Lifecycle, *,
                 dependency: Dependency | None = None, seed: int | None = None) -> None:
        # The loop is passed explicitly so callers in any trio task (not only those
        # spawned inside open_loop) reach the loop that owns the connections.
        self._loop = loop
        self.deadline = config.operation_deadline
        self.lifecycle = lifecycle
        self.dependency = dependency
        self.breaker: CircuitBreaker | None = dependency.breaker if dependency is not None else None
        # Without the application's registry: the config's retries, short waits (a stale pooled connection).
        self.policy = dependency.policy.retry if dependency is not None else RetryPolicy(
            attempts=config.retries + 1, initial=0.02, cap=0.5)
        self._rng = dependency.rng if dependency is not None else random.Random(seed)

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """An idempotent operation: ``call_once`` per attempt, retried per the policy while Redis is
        unavailable (``redis_retry_decision``), never past the caller's deadline."""
        on_retry = self.dependency.count_retry if self.dependency is not None else None
        return await retry_call(functools.partial(self.call_once, fn, *args), policy=self.policy,
                                classify=redis_retry_decision, rng=self._rng, on_retry=on_retry)

    async def call_once(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """One attempt, through the Redis breaker when there is one: refused at once while it is open
        (CoordinationCircuitOpen); unavailability and a call past its call timeout count as failures, any other
        error is an answer. The pub/sub listener's long reads use ``call_unchecked`` and are not calls of the
        breaker."""
        self.lifecycle.check()
        breaker = self.breaker
        if breaker is None:
            return await self.call_unchecked(fn, *args, deadline=self.deadline)
        try:
            return await breaker.call(functools.partial(self.call_unchecked, fn, *args, deadline=self.deadline),
                                      failures=CoordinationUnavailable)
        except CircuitOpen as refused:
            raise CoordinationCircuitOpen(f"redis unavailable ({refused})", refused.retry_after) from None

    async def call_unchecked(self, fn: Callable[..., Awaitable[T]], *args: Any, deadline: float) -> T:
        try:
            with trio.fail_after(deadline):
                result = await trio_asyncio.aio_as_trio(fn, loop=self._loop)(*args)
        except trio.TooSlowError as exc:
            raise CoordinationUnavailable(f"redis did not answer within {deadline:.3g}s") from exc
        except (rexc.RedisError, OSError) as exc:
            raise translate(exc) from exc
        return cast(T, result)
