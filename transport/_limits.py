"""Rate limits per client IP and per user (API.md "Conventions"): a sliding window over the coordination
limiter (Redis when configured, in-process otherwise), 429 ``RATE_LIMITED`` past it, and the ``RateLimit-*``
headers on every response of a limited route.

Limited routes are the user routes (``auth="user"``): the client IP and the user are counted together, in one
limiter call (one Redis round trip), both or neither; a request with a bad token counts against its IP alone, so
a flood of them is limited too. Operators' routes and ``/health`` are never limited.

A limiter that fails (Redis down) lets the request through: a rate limit protects the service, it must not
become the outage. Every limiter call goes through :meth:`RateLimits._hit`, the one place to wrap (a breaker).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import trio
from quart import g

from storage.coordination import CoordinationError, RateDecision, RateLimiter

from ._errors import RateLimited

log = logging.getLogger("vigil.transport.limits")

WINDOW_SECONDS = 60.0  # the limits are stated per minute
_FAIL_OPEN_LOG_EVERY = 10.0  # seconds between two "failing open" warnings while the limiter is down


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    """Hits allowed per sliding minute; 0 turns that limit off."""

    user_per_min: int
    ip_per_min: int
    window: float = WINDOW_SECONDS

    def __post_init__(self) -> None:
        if self.user_per_min < 0 or self.ip_per_min < 0 or self.window <= 0:
            raise ValueError("rate limits must be >= 0 and the window positive")


@dataclass(frozen=True, slots=True)
class Quota:
    """What one response reports in its RateLimit-* headers: the most constrained of the limits hit."""

    limit: int
    remaining: int
    reset: float

    def headers(self) -> dict[str, str]:
        return {"RateLimit-Limit": str(self.limit), "RateLimit-Remaining": str(self.remaining),
                "RateLimit-Reset": str(max(0, math.ceil(self.reset)))}


class RateLimits:
    """The app's limits; without a limiter (an app built without one) nothing is limited."""

    def __init__(self, limiter: RateLimiter | None, config: RateLimitConfig) -> None:
        self._limiter = limiter
        self.config = config
        self.failed_open = 0  # hits let through because the limiter failed
        self._last_warning: float | None = None

    @property
    def enabled(self) -> bool:
        return self._limiter is not None and (self.config.user_per_min > 0 or self.config.ip_per_min > 0)

    async def check(self, ip: str | None, user_id: str | None) -> None:
        """Count one hit on the client IP's and (when known) the user's limit, in one limiter call: both or
        neither. Raises RateLimited (429) past either; records the headers' quota either way."""
        if self._limiter is None:
            return
        hits: list[tuple[str, str, int]] = []  # (scope, key, limit)
        if self.config.ip_per_min > 0:
            hits.append(("ip", f"http:ip:{ip or 'unknown'}", self.config.ip_per_min))
        if user_id is not None and self.config.user_per_min > 0:
            hits.append(("user", f"http:user:{user_id}", self.config.user_per_min))
        if not hits:
            return
        decisions = await self._hit(self._limiter, [(key, limit) for _, key, limit in hits])
        if decisions is None:
            return
        tight = min(zip(decisions, hits, strict=True), key=lambda pair: (pair[0].allowed, pair[0].remaining))
        decision, (scope, _, limit) = tight
        g.rate_quota = Quota(limit, decision.remaining, decision.reset)
        if not decision.allowed:
            raise RateLimited(f"too many requests for this {scope}; retry in {decision.retry_after:.1f} s",
                              code="RATE_LIMITED", retry_after_ms=max(1, math.ceil(decision.retry_after * 1000)),
                              details={"scope": scope, "limit": limit, "windowSeconds": self.config.window})

    async def _hit(self, limiter: RateLimiter, hits: list[tuple[str, int]]) -> tuple[RateDecision, ...] | None:
        """THE limiter call. None when the limiter failed: the request goes through (fail open)."""
        try:
            return await limiter.hit_all(hits, window=self.config.window)
        except CoordinationError as exc:
            self.failed_open += 1
            now = trio.current_time()
            if self._last_warning is None or now - self._last_warning >= _FAIL_OPEN_LOG_EVERY:
                self._last_warning = now
                log.warning("rate limiter unavailable; letting requests through",
                            extra={"fields": {"error": str(exc), "failedOpen": self.failed_open}})
            return None


def quota_headers() -> dict[str, str]:
    """The RateLimit-* headers of the current request (empty when no limit was consulted)."""
    quota: Quota | None = g.get("rate_quota")
    return quota.headers() if quota is not None else {}


__all__ = ["Quota", "RateLimitConfig", "RateLimits", "quota_headers"]
