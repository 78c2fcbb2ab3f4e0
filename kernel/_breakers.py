"""One breaker and one retry policy per dependency, in a registry passed explicitly (no globals).

    breakers = Breakers(BreakersConfig(), seed=7)          # made by run.py / the application
    breakers.publish_to(system.telemetry)                  # transitions become BreakerChanged events
    rows = await breakers["postgres"].call(fetch, classify=transient)   # breaker + retry around fetch

Each attempt of ``Dependency.call`` is one call through the breaker; a refusal (``CircuitOpen``) is never
retried: it fails fast, carrying ``retry_after``. Every transition is a ``BreakerChanged`` telemetry event
(when a hub is attached) and one structured log line ``{breaker, from, to}``. The numbers are the seeds':
a failure rate >= 50 % over >= 5 calls in a 10 s window, or consecutive failures (Redis 3), opens the
breaker for 30 s, then at most 3 probes; a call slower than the dependency's call timeout is a failure.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Final, TypeVar

from ._breaker import BreakerConfig, BreakerSnapshot, CircuitBreaker, CircuitOpen
from ._retry import NO_RETRY, Classify, RetryDecision, RetryPolicy, retry_call
from ._telemetry import BreakerChanged, Telemetry

log = logging.getLogger("vigil.breakers")

T = TypeVar("T")

POSTGRES: Final = "postgres"
REDIS: Final = "redis"
ANTHROPIC: Final = "anthropic"
S3: Final = "s3"


def seeds_breaker(*, call_timeout: float, consecutive_failures: int = 5) -> BreakerConfig:
    """The seeds' breaker: >= 50 % of >= 5 calls in 10 s (or ``consecutive_failures`` in a row) opens it
    for 30 s; then at most 3 probes."""
    return BreakerConfig(window=10.0, min_calls=5, failure_rate=0.5, consecutive_failures=consecutive_failures,
                         open_for=30.0, half_open_probes=3, call_timeout=call_timeout)


@dataclass(frozen=True, slots=True, kw_only=True)
class DependencyPolicy:
    breaker: BreakerConfig
    retry: RetryPolicy = field(default_factory=RetryPolicy)  # 3 attempts, 100 ms, x2, 5 s cap


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakersConfig:
    """One policy per dependency, by name. Extra dependencies go in ``others``."""

    postgres: DependencyPolicy = field(default_factory=lambda: DependencyPolicy(
        breaker=seeds_breaker(call_timeout=5.0)))
    redis: DependencyPolicy = field(default_factory=lambda: DependencyPolicy(
        breaker=seeds_breaker(call_timeout=1.0, consecutive_failures=3)))
    # A model's answer takes seconds; an upload of an export a few.
    anthropic: DependencyPolicy = field(default_factory=lambda: DependencyPolicy(
        breaker=seeds_breaker(call_timeout=60.0)))
    s3: DependencyPolicy = field(default_factory=lambda: DependencyPolicy(breaker=seeds_breaker(call_timeout=30.0)))
    others: tuple[tuple[str, DependencyPolicy], ...] = ()

    def policies(self) -> dict[str, DependencyPolicy]:
        return {POSTGRES: self.postgres, REDIS: self.redis, ANTHROPIC: self.anthropic, S3: self.s3,
                **dict(self.others)}


def _never_after_refusal(classify: Classify) -> Classify:
    def decide(error: Exception) -> RetryDecision:
        return NO_RETRY if isinstance(error, CircuitOpen) else classify(error)

    return decide


class Dependency:
    """One dependency's breaker, retry policy and retry counter (what /metrics reads)."""

    def __init__(self, name: str, policy: DependencyPolicy, rng: random.Random,
                 on_transition: Callable[[str, str, str, float], None]) -> None:
        self.name = name
        self.policy = policy
        self.breaker = CircuitBreaker(name, policy.breaker, on_transition=on_transition)
        self.rng = rng
        self.retries = 0

    def count_retry(self, _retry: int = 0, _delay: float = 0.0, _error: Exception | None = None) -> None:
        """``on_retry`` for ``retry_call``: one more retry of this dependency."""
        self.retries += 1

    async def call(self, fn: Callable[[], Awaitable[T]], *, classify: Classify,
                   policy: RetryPolicy | None = None) -> T:
        """``fn()`` with each attempt through the breaker and the dependency's retry policy between them.
        Only for idempotent calls (or calls with an idempotency key): an attempt may be repeated."""

        async def attempt() -> T:
            async with self.breaker.guard():
                return await fn()

        return await retry_call(attempt, policy=policy or self.policy.retry, classify=_never_after_refusal(classify),
                                rng=self.rng, on_retry=self.count_retry)


class Breakers:
    """The registry: ``breakers["postgres"]`` is that dependency's ``Dependency``."""

    def __init__(self, config: BreakersConfig | None = None, *, seed: int | None = None) -> None:
        self.config = config or BreakersConfig()
        self._telemetry: Telemetry | None = None
        rng = random.Random(seed)
        self._deps = {name: Dependency(name, policy, rng, self._changed)
                      for name, policy in self.config.policies().items()}

    def publish_to(self, telemetry: Telemetry | None) -> None:
        """Send transitions to ``telemetry`` from now on (the actor system starts after the store opens)."""
        self._telemetry = telemetry

    def _changed(self, name: str, before: str, after: str, now: float) -> None:
        log.warning("circuit breaker state changed", extra={"fields": {"breaker": name, "from": before, "to": after}})
        if self._telemetry is not None:
            self._telemetry.publish(BreakerChanged(path=f"breakers/{name}", at=now, detail=f"{before}->{after}",
                                                   breaker=name, from_state=before, to_state=after))

    def __getitem__(self, name: str) -> Dependency:
        return self._deps[name]

    def __contains__(self, name: object) -> bool:
        return name in self._deps

    def __iter__(self) -> Iterator[Dependency]:
        return iter(self._deps.values())

    def snapshots(self) -> dict[str, BreakerSnapshot]:
        return {name: dep.breaker.snapshot() for name, dep in self._deps.items()}


__all__ = ["ANTHROPIC", "POSTGRES", "REDIS", "S3", "Breakers", "BreakersConfig", "Dependency", "DependencyPolicy",
           "seeds_breaker"]
