"""Protocols and value types shared by the in-process and Redis implementations."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple, Protocol

if TYPE_CHECKING:
    from ._fanout import Subscription

__all__ = [
    "BusStats",
    "Coordination",
    "HealthStatus",
    "Leases",
    "Message",
    "MessageBus",
    "RateDecision",
    "RateLimiter",
]


class Message(NamedTuple):
    """One pub/sub delivery; unpacks as ``channel, data``."""

    channel: str
    data: bytes


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    # Hits still allowed in the current window after this one (0 when denied).
    remaining: int
    # Seconds until the next hit can be allowed; 0.0 when this hit was allowed.
    retry_after: float


@dataclass(frozen=True, slots=True)
class BusStats:
    subscribers: int
    delivered: int
    # Messages discarded because a subscriber's buffer was full (slow consumer).
    dropped: int


@dataclass(frozen=True, slots=True)
class HealthStatus:
    ok: bool
    backend: Literal["memory", "redis"]
    detail: str
    # Round trip of a PING in seconds (None for memory or when it failed).
    latency: float | None
    bus: BusStats


class RateLimiter(Protocol):
    async def hit(self, key: str, *, limit: int, window: float) -> RateDecision:
        """Count one hit on ``key``; allow at most ``limit`` hits per sliding ``window`` seconds."""
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
