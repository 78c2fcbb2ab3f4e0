"""Value types shared by the in-process and Redis implementations and their protocols."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

__all__ = ["BusStats", "HealthStatus", "Message", "RateDecision"]


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
    # Seconds until the window holds one hit fewer than now (the oldest counted hit leaves it), so
    # ``remaining`` grows; equals ``retry_after`` when denied. The RateLimit-Reset header.
    reset: float = 0.0


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
