"""The protocols both implementations (in-process and Redis) satisfy."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from ._fanout import Subscription
from ._values import BusStats, HealthStatus, RateDecision

__all__ = ["Coordination", "Leases", "MessageBus", "RateLimiter"]


class RateLimiter(Protocol):
    async def hit(self, key: str, *, limit: int, window: float) -> RateDecision:
        """Count one hit on ``key``; allow at most ``limit`` hits per sliding ``window`` seconds."""
        ...

    async def hit_all(self, hits: Sequence[tuple[str, int]], *, window: float) -> tuple[RateDecision, ...]:
        """One hit on each ``(key, limit)`` at once (one round trip), all or none: counted only if every key
        has room. A decision per key, in order: denied ones say when they free up; the others report their
        room (``allowed``), counted or not."""
        ...


class Leases(Protocol):
    async def acquire(self, name: str, owner: str, ttl: float) -> bool:
        """Take ``name`` for ``ttl`` seconds unless another owner holds it.

        Idempotent for the current owner (refreshes the ttl), so a retry after a lost
        reply does not lock the owner out of its own lease.
        """
        ...

    async def renew(self, name: str, owner: str, ttl: float) -> bool:
        """Reset the ttl; False unless ``owner`` holds the unexpired lease."""
        ...

    async def release(self, name: str, owner: str) -> bool:
        """Drop the lease; False unless ``owner`` holds the unexpired lease."""
        ...


class MessageBus(Protocol):
    async def publish(self, channel: str, message: bytes | str) -> None:
        """Fire-and-forget delivery to current subscribers (at most once); never waits on them."""
        ...

    async def publish_many(self, messages: Iterable[tuple[str, bytes | str]]) -> None:
        """Publish several messages in order with one backend round trip."""
        ...

    def subscribe(
        self, *channels: str, patterns: Iterable[str] = (), buffer: int | None = None
    ) -> AbstractAsyncContextManager[Subscription]:
        """Receive messages on exact ``channels`` and Redis glob ``patterns``.

        Messages published after ``__aenter__`` returns are delivered. A message that
        matches several of a subscription's channels/patterns arrives once per match
        (Redis semantics).
        """
        ...

    def stats(self) -> BusStats: ...


class Coordination(Protocol):
    @property
    def limiter(self) -> RateLimiter: ...

    @property
    def leases(self) -> Leases: ...

    @property
    def bus(self) -> MessageBus: ...

    async def health(self) -> HealthStatus:
        """Report backend health; never raises CoordinationError."""
        ...
