"""Per-subscriber bounded buffers and the subscription index, shared by both buses.

Delivery never blocks: the publisher (in-process) or the Redis listener offers each
message with ``send_nowait``; a full buffer drops the *new* message and counts it,
so one slow WebSocket cannot stall fan-out to the others.
"""

from __future__ import annotations

from collections.abc import Iterable

import trio

from ._values import BusStats, Message

__all__ = ["FanoutCounters", "SubscriberIndex", "Subscription"]


class FanoutCounters:
    """Bus-wide totals, kept beside the per-subscription ones for health checks."""

    __slots__ = ("delivered", "dropped")

    def __init__(self) -> None:
        self.delivered = 0
        self.dropped = 0


class Subscription:
    """What ``bus.subscribe(...)`` yields: ``async for channel, data in sub``.

    Iteration ends when the bus shuts down. ``dropped`` counts messages lost because
    this subscriber's buffer was full; a consumer that sees it grow should resync.
    """

    __slots__ = ("_counters", "_delivered", "_dropped", "_recv", "_send", "channels", "patterns")

    def __init__(
        self,
        channels: tuple[str, ...],
        patterns: tuple[str, ...],
        buffer: int,
        counters: FanoutCounters,
    ) -> None:
        self.channels = channels
        self.patterns = patterns
        self._send, self._recv = trio.open_memory_channel[Message](buffer)
        self._counters = counters
        self._delivered = 0
        self._dropped = 0

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def delivered(self) -> int:
        return self._delivered

    @property
    def pending(self) -> int:
        """Messages buffered and not yet received."""
        return self._recv.statistics().current_buffer_used

    def offer(self, message: Message) -> bool:
        """Buffer ``message`` without waiting; False if it was dropped."""
        try:
            self._send.send_nowait(message)
        except trio.WouldBlock:
            self._dropped += 1
            self._counters.dropped += 1
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            # The subscriber left between routing and delivery: nothing to count.
            return False
        self._delivered += 1
        self._counters.delivered += 1
        return True

    def close(self) -> None:
        """End iteration once the buffered messages are consumed."""
        self._send.close()

    async def receive(self) -> Message:
        """Next message; raises trio.EndOfChannel once the bus has shut down."""
        return await self._recv.receive()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self._recv.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def detach(self) -> None:
        """Called by the bus when the subscriber leaves: late offers then fail fast
        instead of filling a buffer nobody reads."""
        self._send.close()
        self._recv.close()


def unique(names: Iterable[str], what: str) -> tuple[str, ...]:
    """Deduplicate in order; reject non-str early (a bytes channel would silently mismatch)."""
    out: dict[str, None] = {}
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{what} must be non-empty str, got {name!r}")
        out[name] = None
    return tuple(out)


class SubscriberIndex:
    """Who listens to which exact channel / pattern, with transitions reported.

    ``add``/``remove`` return the names whose listener count went 0→1 / 1→0, which the
    Redis bus turns into SUBSCRIBE/UNSUBSCRIBE commands on its single connection.
    """

    __slots__ = ("_by_channel", "_by_pattern", "_subs")

    def __init__(self) -> None:
        self._by_channel: dict[str, set[Subscription]] = {}
        self._by_pattern: dict[str, set[Subscription]] = {}
        self._subs: set[Subscription] = set()

    def __len__(self) -> int:
        return len(self._subs)

    def all(self) -> tuple[Subscription, ...]:
        return tuple(self._subs)

    def add(self, sub: Subscription) -> tuple[list[str], list[str]]:
        self._subs.add(sub)
        return _link(self._by_channel, sub.channels, sub), _link(self._by_pattern, sub.patterns, sub)

    def remove(self, sub: Subscription) -> tuple[list[str], list[str]]:
        if sub not in self._subs:
            return [], []
        self._subs.discard(sub)
        return _unlink(self._by_channel, sub.channels, sub), _unlink(self._by_pattern, sub.patterns, sub)

    def for_channel(self, channel: str) -> tuple[Subscription, ...]:
        subs = self._by_channel.get(channel)
        return tuple(subs) if subs else ()

    def for_pattern(self, pattern: str) -> tuple[Subscription, ...]:
        subs = self._by_pattern.get(pattern)
        return tuple(subs) if subs else ()

    def has_channel(self, channel: str) -> bool:
        return channel in self._by_channel

    def has_pattern(self, pattern: str) -> bool:
        return pattern in self._by_pattern

    def patterns(self) -> list[str]:
        return list(self._by_pattern)

    def stats(self, counters: FanoutCounters) -> BusStats:
        return BusStats(subscribers=len(self._subs), delivered=counters.delivered, dropped=counters.dropped)


def _link(table: dict[str, set[Subscription]], names: tuple[str, ...], sub: Subscription) -> list[str]:
    fresh = []
    for name in names:
        holders = table.get(name)
        if holders is None:
            table[name] = holders = set()
            fresh.append(name)
        holders.add(sub)
    return fresh


def _unlink(table: dict[str, set[Subscription]], names: tuple[str, ...], sub: Subscription) -> list[str]:
    gone = []
    for name in names:
        holders = table.get(name)
        if holders is None:
            continue
        holders.discard(sub)
        if not holders:
            del table[name]
            gone.append(name)
    return gone
