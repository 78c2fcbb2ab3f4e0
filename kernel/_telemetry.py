"""Lifecycle events and the hub that fans them out.

Publishing never blocks and never fails: each subscriber owns a bounded buffer, and an event that
finds it full is dropped and counted (on the subscription and on the hub), so a slow reader can
fall behind but can never slow an actor down.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import ClassVar

import trio


@dataclass(frozen=True, slots=True, kw_only=True)
class TelemetryEvent:
    """Base of every lifecycle event; ``at`` is trio's clock (``trio.current_time()``)."""

    kind: ClassVar[str] = "event"
    path: str
    at: float
    attempt: int | None = None
    delay: float | None = None
    error_type: str | None = None
    error_message: str | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Started(TelemetryEvent):
    kind: ClassVar[str] = "started"


@dataclass(frozen=True, slots=True, kw_only=True)
class Stopped(TelemetryEvent):
    """The actor stopped for good (``detail`` says why); a restart is ``Crashed`` then ``Restarted``."""

    kind: ClassVar[str] = "stopped"


@dataclass(frozen=True, slots=True, kw_only=True)
class Crashed(TelemetryEvent):
    kind: ClassVar[str] = "crashed"


@dataclass(frozen=True, slots=True, kw_only=True)
class Restarted(TelemetryEvent):
    """A restart was scheduled: ``attempt`` (1 = first of a streak) runs after ``delay`` seconds."""

    kind: ClassVar[str] = "restarted"


@dataclass(frozen=True, slots=True, kw_only=True)
class GaveUp(TelemetryEvent):
    kind: ClassVar[str] = "gave_up"


@dataclass(frozen=True, slots=True, kw_only=True)
class MailboxOverflow(TelemetryEvent):
    """A send found the mailbox full; ``detail`` is the overflow policy that applied."""

    kind: ClassVar[str] = "mailbox_full"


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLettered(TelemetryEvent):
    """A message that will never be handled; ``detail`` is the reason."""

    kind: ClassVar[str] = "dead_letter"


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerChanged(TelemetryEvent):
    """A dependency's circuit breaker changed state; ``path`` is ``breakers/<name>``, ``detail`` "from->to"."""

    kind: ClassVar[str] = "breaker_changed"
    breaker: str = ""
    from_state: str = ""
    to_state: str = ""


EVENT_TYPES: tuple[type[TelemetryEvent], ...] = (
    Started, Stopped, Crashed, Restarted, GaveUp, MailboxOverflow, DeadLettered, BreakerChanged,
)


class Subscription:
    """An async iterator over events; ``dropped`` counts what its full buffer turned away."""

    __slots__ = ("_buffer", "_capacity", "_kinds", "_waiter", "dropped", "received", "owner")

    def __init__(self, capacity: int, kinds: frozenset[str] | None, owner: str | None = None) -> None:
        self.owner = owner
        self._buffer: deque[TelemetryEvent] = deque()
        self._capacity = capacity
        self._kinds = kinds
        self._waiter: trio.Event | None = None
        self.dropped = 0
        self.received = 0

    def _offer(self, event: TelemetryEvent) -> bool:
        if self._kinds is not None and event.kind not in self._kinds:
            return True
        if len(self._buffer) >= self._capacity:
            self.dropped += 1
            return False
        self._buffer.append(event)
        if self._waiter is not None:
            self._waiter.set()
            self._waiter = None
        return True

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> TelemetryEvent:
        while not self._buffer:
            self._waiter = trio.Event()
            await self._waiter.wait()
        self.received += 1
        return self._buffer.popleft()

    def pending(self) -> int:
        return len(self._buffer)


class Telemetry:
    """The system's event hub: ``async with system.telemetry.subscribe() as events``."""

    def __init__(self) -> None:
        self._subscribers: list[Subscription] = []
        self.published = 0
        self.dropped = 0

    def publish(self, event: TelemetryEvent) -> None:
        self.published += 1
        for sub in self._subscribers:
            if not sub._offer(event):
                self.dropped += 1

    @property
    def listening(self) -> bool:
        """Whether any subscription is open: publishers skip building events nobody would get."""
        return bool(self._subscribers)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def attach(
        self, *, buffer: int = 1024, kinds: Iterable[str] | None = None, owner: str | None = None
    ) -> Subscription:
        """A subscription without a block, for an actor that drains it on a timer; ``detach`` it.

        With ``owner`` (e.g. the actor's path) a new subscription replaces the owner's previous one,
        so an actor that crashed before detaching does not leave a stale buffer behind.
        """
        if buffer < 1:
            raise ValueError(f"a subscription buffer holds at least one event, got {buffer}")
        if owner is not None:
            self._subscribers = [s for s in self._subscribers if s.owner != owner]
        sub = Subscription(buffer, frozenset(kinds) if kinds is not None else None, owner)
        self._subscribers.append(sub)
        return sub

    def detach(self, sub: Subscription) -> None:
        if sub in self._subscribers:
            self._subscribers.remove(sub)

    def drain(self, sub: Subscription) -> list[TelemetryEvent]:
        """Everything buffered for ``sub``, without waiting."""
        events = list(sub._buffer)
        sub._buffer.clear()
        sub.received += len(events)
        return events

    @asynccontextmanager
    async def subscribe(
        self, *, buffer: int = 1024, kinds: Iterable[str] | None = None
    ) -> AsyncIterator[Subscription]:
        """Receive every event published while the block is open (optionally only ``kinds``)."""
        sub = self.attach(buffer=buffer, kinds=kinds)
        try:
            yield sub
        finally:
            self.detach(sub)
