"""Redis implementations, driven from trio through trio-asyncio.

Every redis-py call goes through the bridge (``_calls.Bridge``): one ``aio_as_trio`` crossing per
attempt (a whole script, pipeline or batch of reads is one asyncio coroutine), bounded in time, through
the Redis breaker, with redis exceptions translated once into the package's hierarchy. Idempotent
operations (``bridge.call``) are retried by the kernel's one retry helper; the others
(``bridge.call_once``: a rate-limit hit, a PUBLISH) are tried once. Each call site says which.

Pub/sub uses ONE Redis connection per coordination object, whatever the number of local
subscribers: a listener task reads it and fans out into per-subscriber bounded buffers,
and SUBSCRIBE/UNSUBSCRIBE are sent only when the first/last local subscriber of a
channel or pattern arrives/leaves.
"""

from __future__ import annotations

import functools
import logging
import math
import random
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal

import redis.asyncio as aredis
import redis.exceptions as rexc
import trio
import trio_asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript

from kernel import Dependency

from ._calls import Bridge
from ._common import Lifecycle, check_hits, check_key, check_ttl, new_subscription, to_bytes
from ._config import CoordinationConfig, RedisConfig
from ._errors import CoordinationCircuitOpen, CoordinationClosed, CoordinationError, CoordinationUnavailable
from ._fanout import FanoutCounters, SubscriberIndex, Subscription
from ._glob import escape_glob
from ._values import BusStats, HealthStatus, Message, RateDecision

__all__ = ["RedisBus", "RedisCoordination", "RedisLeases", "RedisRateLimiter", "open_redis_coordination"]

log = logging.getLogger(__name__)

# Sliding-window logs, atomic because scripts run one at a time. KEYS: sorted sets of allowed
# hits scored in server microseconds (one clock for every process); ARGV[1]: window in
# microseconds; ARGV[1 + i]: the limit of KEYS[i]. All or none: the hit is added to every key
# only if each has room. Per key {allowed, remaining, retry_us, reset_us}. Big numbers go through
# string.format('%d'): Lua's default number formatting would round 16-digit timestamps.
_RATE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
local counts = {}
local room = true
for i = 1, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', string.format('%d', now - window))
  counts[i] = redis.call('ZCARD', KEYS[i])
  if counts[i] >= tonumber(ARGV[i + 1]) then room = false end
end
local out = {}
for i = 1, #KEYS do
  local limit = tonumber(ARGV[i + 1])
  local count = counts[i]
  if count >= limit then
    local entry = redis.call('ZRANGE', KEYS[i], count - limit, count - limit, 'WITHSCORES')
    local retry = tonumber(entry[2]) + window - now
    out[i] = {0, 0, retry, retry}
  else
    if room then
      -- now + count is unique per key: two hits in one microsecond see different counts.
      redis.call('ZADD', KEYS[i], string.format('%d', now), string.format('%d.%d', now, count))
      redis.call('PEXPIRE', KEYS[i], string.format('%d', math.ceil(window / 1000)))
      count = count + 1
    end
    local reset = window
    if count > 0 then
      local oldest = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
      reset = tonumber(oldest[2]) + window - now
    end
    out[i] = {1, limit - count, 0, reset}
  end
end
return out
"""

# Idempotent for the holder: a retry after a lost reply must not lock the owner out.
_ACQUIRE_LUA = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

_RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

class RedisRateLimiter:
    def __init__(self, bridge: Bridge, client: aredis.Redis, prefix: str) -> None:
        self._bridge = bridge
        self._prefix = prefix + "rl:"
        self._script = client.register_script(_RATE_LUA)

    async def hit(self, key: str, *, limit: int, window: float) -> RateDecision:
        (decision,) = await self.hit_all([(key, limit)], window=window)
        return decision

    async def hit_all(self, hits: Sequence[tuple[str, int]], *, window: float) -> tuple[RateDecision, ...]:
        check_hits(hits, window)
        window_us = max(1, round(window * 1_000_000))
        call = functools.partial(self._script, keys=[self._prefix + key for key, _ in hits],
                                 args=[window_us, *(limit for _, limit in hits)])
        # Not idempotent: a hit whose reply was lost may have counted, and a retry would count it again
        # (a client refused early). Tried once; the caller decides what an unavailable limiter means.
        rows = await self._bridge.call_once(call)
        return tuple(RateDecision(allowed=bool(allowed), remaining=int(remaining), retry_after=int(retry_us) / 1e6,
                                  reset=int(reset_us) / 1e6) for allowed, remaining, retry_us, reset_us in rows)


def _ttl_ms(ttl: float) -> int:
    # Round up: a lease must never be shorter than asked.
    return max(1, math.ceil(ttl * 1000))


class RedisLeases:
    def __init__(self, bridge: Bridge, client: aredis.Redis, prefix: str) -> None:
        self._bridge = bridge
        self._prefix = prefix + "lease:"
        self._acquire = client.register_script(_ACQUIRE_LUA)
        self._renew = client.register_script(_RENEW_LUA)
        self._release = client.register_script(_RELEASE_LUA)

    async def _run(self, script: AsyncScript, name: str, *args: Any) -> bool:
        # Idempotent for the holder (see the scripts): retried when Redis is unavailable.
        call = functools.partial(script, keys=[self._prefix + name], args=list(args))
        return bool(await self._bridge.call(call))

    async def acquire(self, name: str, owner: str, ttl: float) -> bool:
        check_ttl(name, owner, ttl)
        return await self._run(self._acquire, name, owner, _ttl_ms(ttl))

    async def renew(self, name: str, owner: str, ttl: float) -> bool:
        check_ttl(name, owner, ttl)
        return await self._run(self._renew, name, owner, _ttl_ms(ttl))

    async def release(self, name: str, owner: str) -> bool:
        check_key("name", name)
        check_key("owner", owner)
        return await self._run(self._release, name, owner)


class _Pending:
    """One SUBSCRIBE round trip; resolved when its PING barrier is answered or it failed."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: CoordinationError | None = None

    def resolve(self, error: CoordinationError | None = None) -> None:
        if not self.done.is_set():
            self.error = error
            self.done.set()


_IDLE_TOKEN = b"vigil-idle"

ListenerState = Literal["idle", "listening", "reconnecting"]


class RedisBus:
    def __init__(
        self, bridge: Bridge, client: aredis.Redis, config: CoordinationConfig, rng: random.Random
    ) -> None:
        self._bridge = bridge
        self._client = client
        self._pubsub = client.pubsub()
        self._config = config.bus
        self._prefix = config.redis.key_prefix
        self._prefix_bytes = self._prefix.encode()
        self._pattern_prefix = escape_glob(self._prefix)
        self._rng = rng
        self._index = SubscriberIndex()
        self._counters = FanoutCounters()
        # (kind, user name) -> the SUBSCRIBE round that made it live on Redis.
        self._ready: dict[tuple[str, str], _Pending] = {}
        # PING token -> rounds that are confirmed once Redis answers that PING: Redis
        # runs one connection's commands in order, so the pong proves SUBSCRIBE ran.
        self._barriers: dict[bytes, list[_Pending]] = {}
        self._barrier_seq = 0
        self._wire_patterns: dict[bytes, str] = {}
        # Serialises commands on the pub/sub connection (order matters for barriers).
        self._cmd_lock = trio.Lock()
        self._wake = trio.Event()
        self._doomed_channels: set[str] = set()
        self._doomed_patterns: set[str] = set()
        self._janitor_wake = trio.Event()
        self._ping_outstanding = False
        self.state: ListenerState = "idle"
        self.reconnects = 0

    # -- publishing -------------------------------------------------------------------

    # PUBLISH is tried once: the bus is at-most-once (a PUBLISH whose reply was lost may have been delivered,
    # and a retry would deliver it twice to subscribers that do not dedupe); a publisher that cares counts
    # the failure, as the realtime bridge does.
    async def publish(self, channel: str, message: bytes | str) -> None:
        check_key("channel", channel)
        await self._bridge.call_once(self._client.publish, self._prefix + channel, to_bytes(message))

    async def publish_many(self, messages: Iterable[tuple[str, bytes | str]]) -> None:
        batch = []
        for channel, message in messages:
            check_key("channel", channel)
            batch.append((self._prefix + channel, to_bytes(message)))
        if not batch:
            await trio.lowlevel.checkpoint()
            return
        await self._bridge.call_once(self._aio_publish_many, batch)

    async def _aio_publish_many(self, batch: list[tuple[str, bytes]]) -> None:
        async with self._client.pipeline(transaction=False) as pipe:
            for channel, data in batch:
                pipe.publish(channel, data)
            await pipe.execute()

    # -- subscribing ------------------------------------------------------------------

    @asynccontextmanager
    async def subscribe(
        self, *channels: str, patterns: Iterable[str] = (), buffer: int | None = None
    ) -> AsyncIterator[Subscription]:
        sub = new_subscription(channels, patterns, buffer, self._config, self._counters)
        self._bridge.lifecycle.check()
        fresh_channels, fresh_patterns = self._index.add(sub)
        for pattern in fresh_patterns:
            self._wire_patterns[self._wire_pattern(pattern)] = pattern
        try:
            if fresh_channels or fresh_patterns:
                await self._send_subscribe(fresh_channels, fresh_patterns)
            await self._await_ready(sub)
            yield sub
        finally:
            # No awaits here: leaving must work while cancelled. The janitor task sends
            # the UNSUBSCRIBE for names nobody listens to any more.
            gone_channels, gone_patterns = self._index.remove(sub)
            sub.detach()
            for channel in gone_channels:
                self._ready.pop(("c", channel), None)
                self._doomed_channels.add(channel)
            for pattern in gone_patterns:
                self._ready.pop(("p", pattern), None)
                self._wire_patterns.pop(self._wire_pattern(pattern), None)
                self._doomed_patterns.add(pattern)
            if gone_channels or gone_patterns:
                self._janitor_wake.set()

    def _wire_pattern(self, pattern: str) -> bytes:
        return (self._pattern_prefix + pattern).encode()

    def _next_token(self) -> bytes:
        self._barrier_seq += 1
        return b"vigil-barrier-%d" % self._barrier_seq

    async def _send_subscribe(self, channels: list[str], patterns: list[str]) -> None:
        pending = _Pending()
        for channel in channels:
            self._ready[("c", channel)] = pending
        for pattern in patterns:
            self._ready[("p", pattern)] = pending
        token = b""
        try:
            async with self._cmd_lock:
                token = self._next_token()
                self._barriers[token] = [pending]
                # Idempotent: SUBSCRIBE to a name already subscribed changes nothing; the barrier's token is
                # the same, so whichever PING is answered first confirms the round.
                await self._bridge.call(
                    self._aio_subscribe,
                    [(self._prefix + c).encode() for c in channels],
                    [self._wire_pattern(p) for p in patterns],
                    token,
                )
        except BaseException as exc:
            self._barriers.pop(token, None)
            # Other subscribers waiting on the same names must fail fast too.
            pending.resolve(
                exc
                if isinstance(exc, CoordinationError)
                else CoordinationUnavailable("subscribe interrupted")
            )
            raise
        finally:
            self._wake.set()

    async def _aio_subscribe(self, channels: list[bytes], patterns: list[bytes], token: bytes) -> None:
        if channels:
            await self._pubsub.subscribe(*channels)
        if patterns:
            await self._pubsub.psubscribe(*patterns)
        await self._pubsub.ping(token)

    async def _await_ready(self, sub: Subscription) -> None:
        keys = [("c", c) for c in sub.channels] + [("p", p) for p in sub.patterns]
        with trio.move_on_after(self._config.subscribe_timeout) as scope:
            for key in keys:
                pending = self._ready.get(key)
                if pending is None:
                    continue
                await pending.done.wait()
                if pending.error is not None:
                    raise CoordinationUnavailable(f"subscribe failed: {pending.error}") from pending.error
        if scope.cancelled_caught:
            raise CoordinationUnavailable(
                f"redis did not confirm the subscription within {self._config.subscribe_timeout:.3g}s"
            )

    # -- background tasks -------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._listen)
                nursery.start_soon(self._janitor)
                task_status.started()
        finally:
            with trio.CancelScope(shield=True):
                try:
                    await self._bridge.call_unchecked(self._pubsub.aclose, deadline=self._bridge.deadline)
                except CoordinationError as exc:
                    # Closing a connection to a dead server: nothing left to release.
                    log.debug("closing the pub/sub connection failed: %s", exc)

    async def _listen(self) -> None:
        delay = self._config.reconnect_backoff_min
        while True:
            if not self._pubsub.subscribed:
                # Nothing to listen to; redis-py reconnects on the next SUBSCRIBE.
                self.state = "idle"
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            try:
                if self.state == "reconnecting":
                    await self._reconnect()
                self.state = "listening"
                batch = await self._bridge.call_unchecked(
                    self._aio_read_batch, deadline=self._config.listener_idle_ping + self._bridge.deadline
                )
            except CoordinationClosed:
                return  # shutting down
            except CoordinationUnavailable as exc:
                if self.state != "reconnecting":
                    self.reconnects += 1
                    log.warning("redis pub/sub connection lost, reconnecting: %s", exc)
                self.state = "reconnecting"
                # Full jitter keeps many processes from reconnecting in lockstep; an open breaker lets the
                # next attempt through (a probe) only after its retry_after.
                wait = delay * (0.5 + self._rng.random())
                if isinstance(exc, CoordinationCircuitOpen):
                    wait = max(wait, exc.retry_after)
                await trio.sleep(wait)
                delay = min(delay * 2, self._config.reconnect_backoff_max)
                continue
            delay = self._config.reconnect_backoff_min
            for raw in batch:
                self._dispatch(raw)

    async def _reconnect(self) -> None:
        async with self._cmd_lock:
            token = self._next_token()
            # Rounds whose PING died with the old socket: redis-py re-subscribes on
            # connect, so the new barrier confirms them.
            orphans = [p for waiting in self._barriers.values() for p in waiting]
            self._barriers = {token: orphans}
            # One attempt through the breaker (the listener's loop is the retry): a failed reconnect is a
            # failure of Redis, a successful one closes a half-open breaker.
            await self._bridge.call_once(self._aio_reconnect, token)
        log.info("redis pub/sub connection re-established")

    async def _aio_reconnect(self, token: bytes) -> None:
        pubsub = self._pubsub
        if pubsub.connection is not None:
            await pubsub.connection.disconnect()
        self._ping_outstanding = False
        await pubsub.connect()  # type: ignore[no-untyped-call]  # on_connect re-subscribes everything
        await pubsub.ping(token)

    async def _aio_read_batch(self) -> list[dict[str, Any]]:
        # Block for the first message, then drain what is already buffered: one bridge
        # crossing per burst instead of per message.
        pubsub = self._pubsub
        first = await pubsub.get_message(timeout=self._config.listener_idle_ping)
        if first is None:
            if self._ping_outstanding:
                raise rexc.ConnectionError("pub/sub connection silent: idle PING unanswered")
            self._ping_outstanding = True
            await pubsub.ping(_IDLE_TOKEN)
            return []
        self._ping_outstanding = False
        batch: list[dict[str, Any]] = [first]
        while len(batch) < self._config.listener_batch:
            more = await pubsub.get_message(timeout=0)
            if more is None:
                break
            batch.append(more)
        return batch

    def _unprefix(self, channel: bytes) -> str | None:
        if not channel.startswith(self._prefix_bytes):
            return None
        return channel[len(self._prefix_bytes) :].decode("utf-8", "surrogateescape")

    def _dispatch(self, raw: dict[str, Any]) -> None:
        kind = raw["type"]
        if kind == "message":
            name = self._unprefix(raw["channel"])
            if name is not None:
                message = Message(name, raw["data"])
                for sub in self._index.for_channel(name):
                    sub.offer(message)
        elif kind == "pmessage":
            pattern = self._wire_patterns.get(raw["pattern"])
            name = self._unprefix(raw["channel"])
            if pattern is not None and name is not None:
                message = Message(name, raw["data"])
                for sub in self._index.for_pattern(pattern):
                    sub.offer(message)
        elif kind == "pong":
            for pending in self._barriers.pop(raw["data"], ()):
                pending.resolve()
        # (p)subscribe/(p)unsubscribe confirmations need nothing: barriers cover them.

    async def _janitor(self) -> None:
        delay = self._config.reconnect_backoff_min
        while True:
            await self._janitor_wake.wait()
            self._janitor_wake = trio.Event()
            failed = False
            async with self._cmd_lock:
                # Checked under the lock: a name re-subscribed meanwhile must stay.
                channels = [c for c in self._doomed_channels if not self._index.has_channel(c)]
                patterns = [p for p in self._doomed_patterns if not self._index.has_pattern(p)]
                self._doomed_channels.clear()
                self._doomed_patterns.clear()
                if channels or patterns:
                    try:  # idempotent: UNSUBSCRIBE from a name not subscribed changes nothing
                        await self._bridge.call(
                            self._aio_unsubscribe,
                            [(self._prefix + c).encode() for c in channels],
                            [self._wire_pattern(p) for p in patterns],
                        )
                    except CoordinationClosed:
                        return  # shutting down: the connection is about to be closed
                    except CoordinationUnavailable as exc:
                        log.warning("redis UNSUBSCRIBE failed, will retry: %s", exc)
                        self._doomed_channels.update(channels)
                        self._doomed_patterns.update(patterns)
                        failed = True
            if failed:
                await trio.sleep(delay)
                delay = min(delay * 2, self._config.reconnect_backoff_max)
                self._janitor_wake.set()
            else:
                delay = self._config.reconnect_backoff_min

    async def _aio_unsubscribe(self, channels: list[bytes], patterns: list[bytes]) -> None:
        if channels:
            await self._pubsub.unsubscribe(*channels)
        if patterns:
            await self._pubsub.punsubscribe(*patterns)

    # -- introspection ----------------------------------------------------------------

    def stats(self) -> BusStats:
        return self._index.stats(self._counters)

    def close(self) -> None:
        for sub in self._index.all():
            sub.close()


class RedisCoordination:
    def __init__(
        self, bridge: Bridge, client: aredis.Redis, bus: RedisBus, config: CoordinationConfig
    ) -> None:
        prefix = config.redis.key_prefix
        self._bridge = bridge
        self._client = client
        self._health_timeout = config.redis.health_timeout
        self._limiter = RedisRateLimiter(bridge, client, prefix)
        self._leases = RedisLeases(bridge, client, prefix)
        self._bus = bus

    @property
    def limiter(self) -> RedisRateLimiter:
        return self._limiter

    @property
    def leases(self) -> RedisLeases:
        return self._leases

    @property
    def bus(self) -> RedisBus:
        return self._bus

    async def health(self) -> HealthStatus:
        stats = self._bus.stats()

        def report(ok: bool, detail: str, latency: float | None = None) -> HealthStatus:
            return HealthStatus(ok=ok, backend="redis", detail=detail, latency=latency, bus=stats)

        started = trio.current_time()
        try:
            with trio.move_on_after(self._health_timeout) as scope:
                await self._bridge.call(self._client.ping)
        except CoordinationError as exc:
            return report(False, f"PING failed: {exc}")
        if scope.cancelled_caught:
            return report(False, f"PING timed out after {self._health_timeout:.3g}s")
        latency = trio.current_time() - started
        if self._bus.state == "reconnecting":
            return report(False, "PING ok; pub/sub listener reconnecting", latency)
        return report(True, f"PING ok; pub/sub listener {self._bus.state}", latency)


async def _connect(url: str, config: RedisConfig) -> aredis.Redis:
    pool = aredis.BlockingConnectionPool.from_url(
        url,
        max_connections=config.max_connections,
        # Waiting for a free pooled connection is backpressure, but bounded.
        timeout=config.command_timeout,
        socket_connect_timeout=config.connect_timeout,
        socket_timeout=config.command_timeout,
        socket_keepalive=True,
        # No retries of redis-py's own: the bridge's (the kernel's helper) are the one retry layer.
        retry=Retry(NoBackoff(), 0),
    )
    client = aredis.Redis.from_pool(pool)
    try:
        await client.ping()
    except BaseException:
        await client.aclose()
        raise
    return client


@asynccontextmanager
async def open_redis_coordination(url: str, config: CoordinationConfig,
                                  dependency: Dependency | None = None) -> AsyncIterator[RedisCoordination]:
    # The loop wraps the nursery of the background tasks; callers' tasks reach it too
    # because the bridge passes the loop explicitly.
    async with trio_asyncio.open_loop() as loop:
        lifecycle = Lifecycle()
        bridge = Bridge(loop, config.redis, lifecycle, dependency=dependency, seed=config.seed)
        # Fail fast on a wrong URL or a dead server rather than on first use (retried: PING is idempotent).
        client = await bridge.call(_connect, url, config.redis)
        try:
            async with trio.open_nursery() as nursery:
                bus = RedisBus(bridge, client, config, random.Random(config.seed))
                await nursery.start(bus.run)
                try:
                    yield RedisCoordination(bridge, client, bus, config)
                finally:
                    lifecycle.closed = True
                    bus.close()
                    nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                try:
                    await bridge.call_unchecked(client.aclose, deadline=bridge.deadline)
                except CoordinationError as exc:
                    log.debug("closing the redis client failed: %s", exc)
