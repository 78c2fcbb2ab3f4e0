"""Cross-process coordination: rate limits, short leases and pub/sub fan-out.

Backed by Redis when ``VIGIL_REDIS_URL`` is set, otherwise by an in-process
implementation with the same protocols (single-process deployments, tests)::

    async with open_coordination(url_or_none, config=CoordinationConfig()) as coord:
        decision = await coord.limiter.hit(f"login:{ip}", limit=5, window=60)
        if await coord.leases.acquire("sync:user-42", owner=worker_id, ttl=10):
            ...
        async with coord.bus.subscribe("user.42", patterns=["broadcast.*"]) as sub:
            async for channel, data in sub:
                ...

Semantics shared by both implementations:

* Rate limiter: exact sliding window; at most ``limit`` allowed hits in any ``window``
  seconds; a denied hit is not counted and reports ``retry_after``; every decision reports
  ``reset``, the seconds until the oldest counted hit leaves the window. Redis uses server
  time inside a Lua script, so it is atomic and consistent across processes.
* Leases survive a Redis outage through ``leases_with_fallback(coord.leases, store)``:
  PostgreSQL session advisory locks (in-process leases on SQLite) decide; Redis is best effort.
* Leases: ``acquire`` succeeds when the lease is free, expired, or already held by the
  same owner (then the ttl is refreshed); only the holder can ``renew``/``release``.
* Pub/sub: at-most-once, fire-and-forget; channels are exact names, patterns are Redis
  globs. Each subscription has a bounded buffer: when full, new messages for it are
  dropped and counted (``Subscription.dropped``, ``BusStats.dropped`` in ``health()``),
  so a slow consumer never blocks publishers or other subscribers. Iteration ends when
  the coordination context exits.

Errors (everything the backend raises is translated once, at this boundary)::

    CoordinationError            base; unexpected backend reply (bug/misconfiguration)
    ├── CoordinationUnavailable  backend unreachable, timed out or not serving: transient
    │    └── CoordinationCircuitOpen  the Redis breaker refused at once (``retry_after``)
    └── CoordinationClosed       used after the ``open_coordination`` context exited

Resilience: with ``open_coordination(..., dependency=breakers["redis"])`` every Redis operation goes through
that breaker, and the idempotent ones (lease scripts, PING, SUBSCRIBE/UNSUBSCRIBE) are retried by the
kernel's one retry helper as ``redis_retry_decision`` says; rate-limit hits and PUBLISH are tried once.

Invalid arguments raise ValueError/TypeError. ``health()`` never raises.

Time: the in-process implementation reads ``trio.current_time()``, so it runs under
``trio.testing.MockClock``. Redis rate limits use the server's clock (one clock for all
processes) and leases use PX expiry. Redis needs a real trio clock: trio-asyncio hands
trio's clock to redis-py's socket timeouts.

With Redis, the context manager owns a trio-asyncio loop and a nursery holding the
pub/sub listener; open it before, and around, the nurseries of the tasks that use it.
All subscriptions of one coordination object share one Redis connection.
"""

from ._calls import redis_retry_decision
from ._config import BusConfig, CoordinationConfig, RedisConfig
from ._errors import CoordinationCircuitOpen, CoordinationClosed, CoordinationError, CoordinationUnavailable
from ._factory import open_coordination
from ._fallback import AdvisoryLeases, FallbackLeases, leases_with_fallback
from ._fanout import Subscription
from ._protocol import Coordination, Leases, MessageBus, RateLimiter
from ._values import BusStats, HealthStatus, Message, RateDecision

__all__ = [
    "AdvisoryLeases",
    "FallbackLeases",
    "leases_with_fallback",
    "BusConfig",
    "BusStats",
    "Coordination",
    "CoordinationCircuitOpen",
    "CoordinationClosed",
    "CoordinationConfig",
    "CoordinationError",
    "CoordinationUnavailable",
    "HealthStatus",
    "Leases",
    "Message",
    "MessageBus",
    "RateDecision",
    "RateLimiter",
    "RedisConfig",
    "Subscription",
    "open_coordination",
    "redis_retry_decision",
]
