"""The Redis bridge: realtime envelopes across server processes.

Each process publishes what it delivered locally to one Redis channel (``vigil:realtime`` by
default), tagged with its own process id, and feeds what other processes published to its own
hub. Publishing locally comes first and never waits for Redis: the facade only queues the envelope
for this actor (a bounded queue; full means dropped and counted), and Redis being down costs remote
delivery only. Connecting is retried with the kernel's jittered exponential backoff; once
connected, the coordination bus reconnects its subscription by itself. A crash restarts the actor,
which connects again.

Its connection goes through the application's Redis dependency (``Breakers["redis"]``) when it is given
one: its failures and publishes count in that breaker (``/health`` circuitBreakers, ``BreakerChanged``
telemetry) like every other Redis call, and while that breaker is open the bridge waits the breaker's
``retry_after`` before it tries to connect again (its attempt is then a probe).

The whole incarnation runs inside one message (``RunBridge``), because the subscription is an
async context that must span the bridge's life; the child spec gives it a short shutdown timeout.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any

import trio

from kernel import Actor, ActorRef, ActorStopped, Dependency, MailboxFull, backoff_delay
from storage.coordination import (
    CoordinationCircuitOpen,
    CoordinationConfig,
    CoordinationUnavailable,
    MessageBus,
    open_coordination,
)

from ._envelope import Envelope, from_wire, to_wire
from ._messages import Publish, RunBridge

log = logging.getLogger("vigil.realtime")


@dataclass(slots=True)
class BridgeState:
    """What the bridge has done, shared with the facade (status, health, tests)."""

    connected: bool = False
    connects: int = 0  # successful connections (a restart or an outage adds one)
    failed_connects: int = 0
    published: int = 0
    publish_failures: int = 0
    received: int = 0  # envelopes of other processes fed to the hub
    dropped: int = 0  # not sent to Redis (queue full) or not fed to the hub (its mailbox full)
    malformed: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class BridgeSettings:
    url: str
    channel: str
    process_id: str
    coordination: CoordinationConfig
    retry_base: float
    retry_max: float
    subscriber_buffer: int


class RedisBridge(Actor):
    def __init__(self, *, settings: BridgeSettings, outbox: trio.MemoryReceiveChannel[Envelope], hub: str,
                 state: BridgeState, seed: int | None = None, redis: Dependency | None = None) -> None:
        self.settings = settings
        self.redis = redis  # the application's Redis breaker and retry policy (Breakers["redis"])
        self.outbox = outbox  # shared with the facade: survives restarts
        self.hub_path = hub
        self.state = state
        self.rng = random.Random(seed)
        self.hub: ActorRef | None = None

    async def started(self) -> None:
        self.hub = self.system.ref(self.hub_path)
        self.ref.tell_nowait(RunBridge())

    async def receive(self, msg: Any) -> Any:
        match msg:
            case RunBridge():
                try:
                    await self._run()
                finally:
                    self.state.connected = False
            case _:
                raise TypeError(f"realtime bridge: unexpected message {msg!r}")
        return None

    async def _run(self) -> None:
        cfg = self.settings
        attempt = 0
        while True:
            try:
                async with open_coordination(cfg.url, config=cfg.coordination, dependency=self.redis) as coordination:
                    bus = coordination.bus
                    async with bus.subscribe(cfg.channel, buffer=cfg.subscriber_buffer) as subscription, \
                            trio.open_nursery() as nursery:
                        nursery.start_soon(self._pump, bus)
                        self.state.connected = True
                        self.state.connects += 1
                        attempt = 0
                        log.info("realtime bridge connected", extra={"fields": {"channel": cfg.channel}})
                        async for _channel, data in subscription:
                            self._feed(data)
                        nursery.cancel_scope.cancel()
            except CoordinationUnavailable as exc:
                self.state.connected = False
                self.state.failed_connects += 1
                delay = backoff_delay(attempt, base_delay=cfg.retry_base, max_delay=cfg.retry_max,
                                      jitter=0.8 + 0.4 * self.rng.random())
                if isinstance(exc, CoordinationCircuitOpen):
                    delay = max(delay, exc.retry_after)  # sooner would be refused again without a try
                attempt += 1
                log.warning("realtime bridge: redis unavailable; local delivery continues, retrying",
                            extra={"fields": {"error": str(exc), "retryIn": round(delay, 3), "attempt": attempt}})
                await trio.sleep(delay)

    async def _pump(self, bus: MessageBus) -> None:
        cfg = self.settings
        async for first in self.outbox:
            batch = [first]
            while len(batch) < 256:  # what is queued already goes in one round trip
                try:
                    batch.append(self.outbox.receive_nowait())
                except trio.WouldBlock:
                    break
            wire = [(cfg.channel, to_wire(envelope, origin_process=cfg.process_id)) for envelope in batch]
            if await self._publish(bus, wire):
                self.state.published += len(batch)
            else:
                # Lost to other processes (the local ones already have them).
                self.state.publish_failures += len(batch)

    async def _publish(self, bus: MessageBus, wire: list[tuple[str, bytes]]) -> bool:
        """The bus publishes at most once; the bridge sends a failed batch once more (after a short, jittered
        pause) because its receivers may see it twice: every connection drops an envelope whose eventId it
        was already sent. Not while the Redis breaker refuses: that would be refused again at once."""
        for attempt in (1, 2):
            try:
                await bus.publish_many(wire)
                return True
            except CoordinationUnavailable as exc:
                final = attempt == 2 or isinstance(exc, CoordinationCircuitOpen)
                log.warning("realtime bridge: publish failed" + ("" if final else ", sending it once more"),
                            extra={"fields": {"error": str(exc), "envelopes": len(wire), "attempt": attempt}})
                if final:
                    return False
                await trio.sleep(self.settings.retry_base * (0.5 + self.rng.random()))
        return False

    def _feed(self, data: bytes) -> None:
        try:
            envelope, origin = from_wire(data)
        except ValueError as exc:
            self.state.malformed += 1
            log.warning("realtime bridge: ignored a malformed message", extra={"fields": {"error": str(exc)}})
            return
        if origin == self.settings.process_id:
            return  # ours: delivered locally before it was published
        assert self.hub is not None
        try:
            self.hub.tell_nowait(Publish(envelope=envelope))
        except (MailboxFull, ActorStopped):
            self.state.dropped += 1
            return
        self.state.received += 1


__all__ = ["BridgeSettings", "BridgeState", "RedisBridge"]
