"""Messages of the realtime actors and what each one answers."""

from __future__ import annotations

from dataclasses import dataclass

from ._envelope import Envelope


@dataclass(frozen=True, slots=True, kw_only=True)
class Publish:
    """Hub: deliver to the user's local connections. Told, never asked (publishing never waits)."""

    envelope: Envelope


@dataclass(frozen=True, slots=True, kw_only=True)
class HubStats:
    """Hub, asked: reply is a ``RoomStats``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RunBridge:
    """Bridge, to itself: connect to Redis and relay until cancelled (one per incarnation)."""


__all__ = ["HubStats", "Publish", "RunBridge"]
