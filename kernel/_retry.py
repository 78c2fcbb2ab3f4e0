"""One retry helper for every dependency: exponential backoff with full jitter, a retryable
classification the caller supplies, and a deadline that respects the caller's cancel scope.

    attempt 0 fails ──classify──▶ NO_RETRY ─────────────▶ raise it
                                  RetryAfter(hint) ──▶ sleep max(hint, U(0, min(cap, initial·multiplier^n)))
                                                       unless that would pass the caller's deadline: raise it

The decisions (``retry_delay``, ``http_status_decision``, ``parse_retry_after``) are pure; ``retry_call`` is
the thin trio shell. Nothing here catches ``trio.Cancelled`` or any other ``BaseException``: a cancelled
caller stops at once. Never wrap a non-idempotent call that has no idempotency key: retrying it may apply it
twice.
"""

from __future__ import annotations

import email.utils
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, TypeVar

import trio

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """``attempts`` counts every call, the first included (3 = one call and up to two retries)."""

    attempts: int = 3
    initial: float = 0.1  # seconds; the first retry waits U(0, initial)
    multiplier: float = 2.0
    cap: float = 5.0  # no single wait drawn from the backoff exceeds this

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be >= 1 (1 means no retry)")
        if self.initial < 0 or self.cap < 0 or self.multiplier < 1:
            raise ValueError("initial and cap must be >= 0 and multiplier >= 1")


@dataclass(frozen=True, slots=True)
class RetryAfter:
    """Retry; ``hint`` is a delay the other side asked for (HTTP ``Retry-After``), if any."""

    hint: float | None = None


class _NoRetry:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_RETRY"


NO_RETRY: Final = _NoRetry()
RetryDecision = RetryAfter | _NoRetry
Classify = Callable[[Exception], RetryDecision]


def retry_delay(policy: RetryPolicy, retry: int, draw: float, hint: float | None = None) -> float:
    """The wait before retry number ``retry`` (0 = the first retry): full jitter, ``draw`` in [0, 1).
    A server's ``hint`` is a floor: we never come back sooner than we were asked to."""
    ceiling = min(policy.cap, policy.initial * policy.multiplier ** min(retry, 64))
    jittered = draw * ceiling
    return max(jittered, hint) if hint is not None else jittered


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from an HTTP ``Retry-After`` value (delta-seconds or an HTTP date; ``now`` is the wall
    clock in epoch seconds the date is measured from). None when absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if now is None:
            return None
        seconds = when.timestamp() - now
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


def http_status_decision(status: int, retry_after: float | None = None) -> RetryDecision:
    """429 and 5xx are worth another try (429 honouring ``Retry-After``); no other status is."""
    if status == 429 or 500 <= status <= 599:
        return RetryAfter(retry_after)
    return NO_RETRY


async def retry_call(call: Callable[[], Awaitable[T]], *, policy: RetryPolicy, classify: Classify,
                     rng: random.Random, on_retry: Callable[[int, float, Exception], None] | None = None) -> T:
    """Await ``call()`` until it succeeds, ``classify`` says the error is final, ``policy.attempts`` are
    spent, or the next wait would end past the caller's effective deadline. The last error is raised
    as it was. ``on_retry(retry, delay, error)`` runs before each wait (metrics, logs)."""
    retry = 0
    while True:
        try:
            return await call()
        except Exception as error:
            decision = classify(error)
            if isinstance(decision, _NoRetry) or retry + 1 >= policy.attempts:
                raise
            delay = retry_delay(policy, retry, rng.random(), decision.hint)
            if trio.current_time() + delay >= trio.current_effective_deadline():
                raise  # the caller would be cancelled mid-wait: fail now with the real reason
            if on_retry is not None:
                on_retry(retry, delay, error)
            retry += 1
        await trio.sleep(delay)


__all__ = ["NO_RETRY", "Classify", "RetryAfter", "RetryDecision", "RetryPolicy", "http_status_decision",
           "parse_retry_after", "retry_call", "retry_delay"]
