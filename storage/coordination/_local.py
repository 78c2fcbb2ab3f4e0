"""In-process implementations, for single-process deployments and tests.

All state lives in dicts touched only between checkpoints, so each operation is atomic
with respect to other trio tasks without locks. Time is ``trio.current_time()`` so a
``MockClock`` drives expiry deterministically.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager

import trio

from ._common import Lifecycle, check_hits, check_key, check_ttl, new_subscription, to_bytes
from ._config import BusConfig, CoordinationConfig
from ._fanout import FanoutCounters, SubscriberIndex, Subscription
from ._glob import compile_glob
from ._values import BusStats, HealthStatus, Message, RateDecision

__all__ = ["LocalBus", "LocalCoordination", "LocalLeases", "LocalRateLimiter", "open_local_coordination"]


class _Log:
    """Timestamps of the allowed hits of one key (sliding-window log)."""

    __slots__ = ("stamps", "window")

    def __init__(self, window: float) -> None:
        self.stamps: deque[float] = deque()
        self.window = window


class LocalRateLimiter:
    """Sliding-window log: exact, memory O(limit) per key (denied hits are not stored)."""

    def __init__(self, lifecycle: Lifecycle, sweep_interval: float) -> None:
        self._lifecycle = lifecycle
        self._logs: dict[str, _Log] = {}
        self._sweep_interval = sweep_interval
        self._next_sweep = trio.current_time() + sweep_interval

    async def hit(self, key: str, *, limit: int, window: float) -> RateDecision:
        (decision,) = await self.hit_all([(key, limit)], window=window)
        return decision

    async def hit_all(self, hits: Sequence[tuple[str, int]], *, window: float) -> tuple[RateDecision, ...]:
        check_hits(hits, window)
        await trio.lowlevel.checkpoint()
        self._lifecycle.check()
        now = trio.current_time()
        self._maybe_sweep(now)
        logs = [self._trimmed(key, window, now) for key, _ in hits]
        room = all(len(log) < limit for log, (_, limit) in zip(logs, hits, strict=True))
        decisions = []
        for stamps, (_, limit) in zip(logs, hits, strict=True):
            count = len(stamps)
            if count >= limit:
                decisions.append(_denied(stamps, limit, window, now))
                continue
            if room:
                stamps.append(now)
                count += 1
            reset = min(stamps[0] + window - now, window) if stamps else window
            decisions.append(RateDecision(allowed=True, remaining=limit - count, retry_after=0.0, reset=reset))
        return tuple(decisions)

    def _trimmed(self, key: str, window: float, now: float) -> deque[float]:
        log = self._logs.get(key)
        if log is None:
            log = self._logs[key] = _Log(window)
        log.window = window
        stamps = log.stamps
        # Compare "stamp + window <= now" (not "stamp <= now - window") so that sleeping
        # exactly retry_after lands on the boundary despite float rounding.
        while stamps and stamps[0] + window <= now:
            stamps.popleft()
        return stamps

    def _maybe_sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._sweep_interval
        idle = [k for k, log in self._logs.items() if not log.stamps or log.stamps[-1] + log.window <= now]
        for key in idle:
            del self._logs[key]

    def __len__(self) -> int:
        """Keys currently tracked (for tests of the idle sweep)."""
        return len(self._logs)


def _denied(stamps: deque[float], limit: int, window: float, now: float) -> RateDecision:
    # A slot frees when the entry that keeps us at `limit` expires; with a limit lower
    # than on earlier calls that is not necessarily the oldest one.
    expires = stamps[len(stamps) - limit] + window
    # Float rounding must neither push the advice past `window` nor make it too short
    # (sleeping retry_after must be enough); stamps <= now keeps the clamp safe.
    retry_after = min(expires - now, window)
    while now + retry_after < expires:
        retry_after = math.nextafter(retry_after, math.inf)
    return RateDecision(allowed=False, remaining=0, retry_after=retry_after, reset=retry_after)


class LocalLeases:
    def __init__(self, lifecycle: Lifecycle, sweep_interval: float) -> None:
        self._lifecycle = lifecycle
        self._held: dict[str, tuple[str, float]] = {}  # name -> (owner, expires_at)
        self._sweep_interval = sweep_interval
        self._next_sweep = trio.current_time() + sweep_interval

    async def _now(self) -> float:
        await trio.lowlevel.checkpoint()
        self._lifecycle.check()
        now = trio.current_time()
        if now >= self._next_sweep:
            self._next_sweep = now + self._sweep_interval
            for name in [n for n, (_, exp) in self._held.items() if exp <= now]:
                del self._held[name]
        return now

    def _holder(self, name: str, now: float) -> str | None:
        current = self._held.get(name)
        if current is None or current[1] <= now:
            return None
        return current[0]

    async def acquire(self, name: str, owner: str, ttl: float) -> bool:
        check_ttl(name, owner, ttl)
        now = await self._now()
        holder = self._holder(name, now)
        if holder is not None and holder != owner:
            return False
        self._held[name] = (owner, now + ttl)
        return True

    async def renew(self, name: str, owner: str, ttl: float) -> bool:
        check_ttl(name, owner, ttl)
        now = await self._now()
        if self._holder(name, now) != owner:
            return False
        self._held[name] = (owner, now + ttl)
        return True

    async def release(self, name: str, owner: str) -> bool:
        check_key("name", name)
        check_key("owner", owner)
        now = await self._now()
        if self._holder(name, now) != owner:
            return False
        del self._held[name]
        return True

    def __len__(self) -> int:
        return len(self._held)


class LocalBus:
    def __init__(self, lifecycle: Lifecycle, config: BusConfig) -> None:
        self._lifecycle = lifecycle
        self._config = config
        self._index = SubscriberIndex()
        self._counters = FanoutCounters()

    async def publish(self, channel: str, message: bytes | str) -> None:
        check_key("channel", channel)
        data = to_bytes(message)
        await trio.lowlevel.checkpoint()
        self._lifecycle.check()
        self._route(channel, data)

    async def publish_many(self, messages: Iterable[tuple[str, bytes | str]]) -> None:
        batch = []
        for channel, message in messages:
            check_key("channel", channel)
            batch.append((channel, to_bytes(message)))
        await trio.lowlevel.checkpoint()
        self._lifecycle.check()
        for channel, data in batch:
            self._route(channel, data)

    def _route(self, channel: str, data: bytes) -> None:
        message = Message(channel, data)
        # Exact subscribers first, then patterns: the order Redis delivers in.
        for sub in self._index.for_channel(channel):
            sub.offer(message)
        patterns = self._index.patterns()
        if patterns:
            raw = channel.encode()
            for pattern in patterns:
                if compile_glob(pattern).fullmatch(raw) is not None:
                    for sub in self._index.for_pattern(pattern):
                        sub.offer(message)

    @asynccontextmanager
    async def subscribe(
        self, *channels: str, patterns: Iterable[str] = (), buffer: int | None = None
    ) -> AsyncIterator[Subscription]:
        sub = new_subscription(channels, patterns, buffer, self._config, self._counters)
        self._lifecycle.check()
        self._index.add(sub)
        try:
            await trio.lowlevel.checkpoint()
            yield sub
        finally:
            self._index.remove(sub)
            sub.detach()

    def stats(self) -> BusStats:
        return self._index.stats(self._counters)

    def close(self) -> None:
        for sub in self._index.all():
            sub.close()


class LocalCoordination:
    def __init__(self, config: CoordinationConfig) -> None:
        self._lifecycle = Lifecycle()
        self._limiter = LocalRateLimiter(self._lifecycle, config.local_sweep_interval)
        self._leases = LocalLeases(self._lifecycle, config.local_sweep_interval)
        self._bus = LocalBus(self._lifecycle, config.bus)

    @property
    def limiter(self) -> LocalRateLimiter:
        return self._limiter

    @property
    def leases(self) -> LocalLeases:
        return self._leases

    @property
    def bus(self) -> LocalBus:
        return self._bus

    async def health(self) -> HealthStatus:
        await trio.lowlevel.checkpoint()
        closed = self._lifecycle.closed
        return HealthStatus(
            ok=not closed,
            backend="memory",
            detail="closed" if closed else "in-process",
            latency=None,
            bus=self._bus.stats(),
        )

    def _close(self) -> None:
        self._lifecycle.closed = True
        self._bus.close()


@asynccontextmanager
async def open_local_coordination(config: CoordinationConfig) -> AsyncIterator[LocalCoordination]:
    coordination = LocalCoordination(config)
    try:
        yield coordination
    finally:
        coordination._close()
