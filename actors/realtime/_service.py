"""The realtime domain's wiring and its facade.

    realtime (one_for_one)
     ├── hub        RealtimeHub: delivers envelopes to the local connections of their user
     └── bridge     RedisBridge, with a Redis URL only: envelopes to and from other processes

:class:`RealtimeDomain` builds the subtree and what its actors share with the facade (the rooms,
the bridge's queue and counters); ``domain.service(system)`` gives the :class:`RealtimeService`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from kernel import ActorRef, ActorStopped, ActorSystem, ChildSpec, Dependency, MailboxFull, Supervisor
from storage.coordination import BusConfig, CoordinationConfig, RedisConfig

from ._bridge import BridgeSettings, BridgeState, RedisBridge
from ._envelope import Envelope, check_device_id, projection_updated, sync_changed
from ._errors import HubUnavailable
from ._hub import RealtimeHub
from ._messages import Publish
from ._rooms import CLOSE_NORMAL, Connection, Rooms, RoomStats

log = logging.getLogger("vigil.realtime")


@dataclass(frozen=True, slots=True, kw_only=True)
class RealtimeConfig:
    send_buffer: int = 256  # envelopes queued per connection; full when one arrives -> closed 4408
    remember: int = 1024  # event ids per connection kept to drop repeats
    hub_mailbox: int = 4096
    redis_url: str | None = None  # None: this process only
    channel: str = "realtime"  # on Redis: redis.key_prefix + channel ("vigil:realtime")
    redis: RedisConfig = field(default_factory=RedisConfig)
    bus: BusConfig = field(default_factory=BusConfig)
    bridge_queue: int = 1024  # envelopes waiting to be published to Redis
    retry_base: float = 0.1  # bridge reconnect backoff (kernel.backoff_delay)
    retry_max: float = 10.0
    bridge_shutdown_timeout: float = 0.5  # the bridge never idles (see _bridge), so stopping it is a cancel
    process_id: str | None = None  # None: a fresh one; tells our own messages apart on Redis
    seed: int | None = None

    def __post_init__(self) -> None:
        if min(self.send_buffer, self.remember, self.hub_mailbox, self.bridge_queue) < 1:
            raise ValueError("RealtimeConfig: send_buffer, remember, hub_mailbox and bridge_queue must be >= 1")
        if not 0 < self.retry_base <= self.retry_max:
            raise ValueError("RealtimeConfig: 0 < retry_base <= retry_max")


@dataclass(frozen=True, slots=True, kw_only=True)
class RealtimeStatus:
    rooms: RoomStats
    process_id: str
    dropped: int  # envelopes the hub or the bridge queue had no room for
    bridge: BridgeState | None  # a copy; None without Redis


class RealtimeDomain:
    name = "realtime"

    def __init__(self, config: RealtimeConfig | None = None, *, redis: Dependency | None = None) -> None:
        """``redis`` is the application's Redis dependency (``Breakers["redis"]``): the bridge's connection goes
        through its breaker and retry policy, as every other Redis call does."""
        self.config = cfg = config or RealtimeConfig()
        self.redis = redis
        self.process_id = cfg.process_id or uuid.uuid4().hex
        self.rooms = Rooms(buffer=cfg.send_buffer, remember=cfg.remember)
        self.bridge_state = BridgeState()
        self.outbox: tuple[trio.MemorySendChannel[Envelope], trio.MemoryReceiveChannel[Envelope]] | None = (
            trio.open_memory_channel[Envelope](cfg.bridge_queue) if cfg.redis_url else None)

    def subtree(self, *, under: str = "root") -> Supervisor:
        cfg = self.config
        children = [ChildSpec("hub", RealtimeHub, kwargs={"rooms": self.rooms}, mailbox=cfg.hub_mailbox,
                              overflow="reject")]
        if cfg.redis_url and self.outbox is not None:
            settings = BridgeSettings(
                url=cfg.redis_url, channel=cfg.channel, process_id=self.process_id,
                coordination=CoordinationConfig(redis=cfg.redis, bus=cfg.bus, seed=cfg.seed),
                retry_base=cfg.retry_base, retry_max=cfg.retry_max, subscriber_buffer=cfg.hub_mailbox)
            children.append(ChildSpec(
                "bridge", RedisBridge, mailbox=4, overflow="drop_oldest", shutdown_timeout=cfg.bridge_shutdown_timeout,
                kwargs={"settings": settings, "outbox": self.outbox[1], "hub": f"{under}/{self.name}/hub",
                        "state": self.bridge_state, "seed": cfg.seed, "redis": self.redis}))
        return Supervisor(self.name, strategy="one_for_one", max_restarts=20, within=60.0, base_delay=0.05,
                          max_delay=2.0, children=children)

    def service(self, system: ActorSystem, *, under: str = "root") -> RealtimeService:
        return RealtimeService(system.ref(f"{under}/{self.name}/hub"), self)


class RealtimeService:
    """Connections in, envelopes out; publishing never waits."""

    def __init__(self, hub: ActorRef, domain: RealtimeDomain) -> None:
        self._hub = hub
        self._rooms = domain.rooms
        self._outbox = domain.outbox[0] if domain.outbox is not None else None
        self._bridge = domain.bridge_state if domain.outbox is not None else None
        self._process_id = domain.process_id
        self._anonymous = 0
        self._dropped = 0

    @asynccontextmanager
    async def connect(self, user_id: str, device_id: str | None = None) -> AsyncIterator[Connection]:
        """A connection of ``user_id``'s device ``device_id`` (None: a device of its own), registered
        until the block exits. Raises InvalidDeviceId, or HubUnavailable once the hub has stopped."""
        if device_id is None:
            # Unique per process (the process id is random): a device of its own.
            self._anonymous += 1
            device_id = f"anonymous:{self._process_id}:{self._anonymous}"
        else:
            check_device_id(device_id)
        if self._rooms.shut:
            raise HubUnavailable("the realtime hub has stopped")
        conn = self._rooms.register(user_id, device_id)
        try:
            yield conn
        finally:
            self._rooms.unregister(conn)
            conn.close(CLOSE_NORMAL, "closed")

    def publish(self, envelope: Envelope) -> None:
        """Deliver to this process's connections, then queue for the other processes (Redis)."""
        try:
            self._hub.tell_nowait(Publish(envelope=envelope))
        except (MailboxFull, ActorStopped) as exc:
            self._dropped += 1
            log.warning("realtime: event dropped (hub unavailable)", extra={"fields": {
                "eventId": envelope.event_id, "error": type(exc).__name__}})
        if self._outbox is not None:
            try:
                self._outbox.send_nowait(envelope)
            except trio.WouldBlock:
                assert self._bridge is not None
                self._bridge.dropped += 1

    def projection_updated(self, *, user_id: str, handler: str, projected: int, correlation_id: str | None) -> None:
        """``health.projection.updated`` (the projection workers' ``Publishes`` protocol)."""
        self.publish(projection_updated(user_id=user_id, handler=handler, projected=projected,
                                        correlation_id=correlation_id))

    def sync_changed(self, *, event_id: str, user_id: str, entity_type: str, entity_id: str, version: int,
                     payload: dict[str, Any], origin_device: str | None, correlation_id: str | None) -> None:
        """``sync.changed``, to every connection of the user but the originating device's."""
        self.publish(sync_changed(event_id=event_id, user_id=user_id, entity_type=entity_type,
                                  entity_id=entity_id, version=version, payload=payload,
                                  origin_device=origin_device, correlation_id=correlation_id))

    def connected(self, user_id: str) -> int:
        """How many connections ``user_id`` has in this process."""
        return len(self._rooms.connections(user_id))

    def status(self) -> RealtimeStatus:
        bridge = None
        if self._bridge is not None:
            state = self._bridge
            bridge = BridgeState(**{name: getattr(state, name) for name in BridgeState.__dataclass_fields__})
        return RealtimeStatus(rooms=self._rooms.stats(), process_id=self._process_id, dropped=self._dropped,
                              bridge=bridge)


__all__ = ["RealtimeConfig", "RealtimeDomain", "RealtimeService", "RealtimeStatus"]
