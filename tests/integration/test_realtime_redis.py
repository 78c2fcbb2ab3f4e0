"""Realtime across processes: two hubs in one test process, each with its own RedisBridge on the
real Redis (VIGIL_TEST_REDIS_URL; skipped loudly when unreachable, a failure under CI=true), a
bridge whose Redis is a closed port (local delivery goes on, the bridge keeps retrying), and a bridge on the
application's Redis breaker whose redis-server of its own stops and starts again (the breaker opens and closes,
as /health shows it; local delivery never stops)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from actors.realtime import BridgeState, Connection, Envelope, RealtimeConfig, RealtimeDomain, RealtimeService
from kernel import REDIS, ActorSystem, Breakers, BreakersConfig, DependencyPolicy, Supervisor, seeds_breaker
from storage.coordination import RedisConfig
from tests.integration.test_coordination_redis import (
    REDIS_URL,
    PrivateRedis,
    free_port,
    private_redis,
    require_redis,
)
from tests.realtime_helpers import client, next_json, serving
from transport import breakers_health

__all__ = ["private_redis"]  # a fixture: a throwaway redis-server


@asynccontextmanager
async def hub(config: RealtimeConfig) -> AsyncIterator[RealtimeService]:
    """One "process": a realtime subtree in an actor system of its own."""
    domain = RealtimeDomain(config)
    async with ActorSystem.start(Supervisor("root", children=[domain.subtree()]), seed=3) as system:
        yield domain.service(system)
        await system.stop()


def bridged(prefix: str, process_id: str, url: str = REDIS_URL, **kw: object) -> RealtimeConfig:
    return RealtimeConfig(redis_url=url, redis=RedisConfig(key_prefix=prefix, connect_timeout=0.5,
                                                           command_timeout=0.5, health_timeout=0.5),
                          process_id=process_id, seed=11, retry_base=0.02, retry_max=0.1, **kw)  # type: ignore[arg-type]


async def eventually(predicate: Callable[[], bool], seconds: float = 5.0) -> None:
    with trio.fail_after(seconds):
        for _ in iter(int, 1):  # until it holds
            if predicate():
                return
            await trio.sleep(0.01)


async def next_envelope(conn: Connection, seconds: float = 5.0) -> Envelope:
    with trio.fail_after(seconds):
        return await anext(conn)


async def nothing_more(conn: Connection) -> None:
    with trio.move_on_after(0.3):
        pytest.fail(f"unexpected envelope {await anext(conn)}")


@pytest.fixture
def prefix() -> str:
    require_redis()
    return f"vigil-test:{uuid.uuid4().hex[:12]}:"  # the channel is PREFIX + "realtime": no cross-talk


def bridge(service: RealtimeService) -> BridgeState:
    state = service.status().bridge
    assert state is not None, "this hub has no Redis bridge"
    return state


@pytest.mark.redis
async def test_envelopes_cross_processes_once_and_skip_the_origin_device(prefix: str) -> None:
    async with hub(bridged(prefix, "p1")) as one, hub(bridged(prefix, "p2")) as two:
        await eventually(lambda: all(bridge(s).connected for s in (one, two)))
        async with one.connect("alice", "phone") as phone, two.connect("alice", "tablet") as tablet, \
                two.connect("bob") as bob:
            one.projection_updated(user_id="alice", handler="h", projected=1, correlation_id="c-1")
            remote = await next_envelope(tablet)
            assert (remote.event_id, remote.correlation_id, remote.payload) == (
                "h:alice:1", "c-1", {"handler": "h", "projectedWatermark": 1})
            assert (await next_envelope(phone)).event_id == "h:alice:1"  # local, first

            # the origin device is excluded in the other process too
            one.sync_changed(event_id="o:2", user_id="alice", entity_type="goal", entity_id="g", version=2,
                             payload={}, origin_device="tablet", correlation_id=None)
            two.sync_changed(event_id="o:3", user_id="alice", entity_type="goal", entity_id="g", version=3,
                             payload={}, origin_device="phone", correlation_id=None)
            assert (await next_envelope(phone)).event_id == "o:2"
            assert (await next_envelope(tablet)).event_id == "o:3"
            for conn in (phone, tablet, bob):
                await nothing_more(conn)
            # each hub took only the other's envelopes from Redis, not its own back
            assert bridge(one).received == 1
            assert bridge(two).received == 2
            assert bridge(one).published == 2 and bridge(two).published == 1


@pytest.mark.redis
async def test_a_redelivered_event_from_two_processes_reaches_a_connection_once(prefix: str) -> None:
    async with hub(bridged(prefix, "p1")) as one, hub(bridged(prefix, "p2")) as two:
        await eventually(lambda: all(bridge(s).connected for s in (one, two)))
        async with two.connect("alice") as conn:
            # the outbox redelivered the event, and this time another process handled it
            one.projection_updated(user_id="alice", handler="h", projected=5, correlation_id=None)
            two.projection_updated(user_id="alice", handler="h", projected=5, correlation_id=None)
            assert (await next_envelope(conn)).event_id == "h:alice:5"
            await eventually(lambda: bridge(two).received == 1)
            await nothing_more(conn)
            assert two.status().rooms.duplicates == 1


async def test_local_delivery_goes_on_while_redis_is_unreachable() -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    async with hub(bridged("vigil-test:closed:", "lonely", url=closed, bridge_queue=4)) as service, \
            service.connect("alice") as conn:
        for n in range(1, 21):
            service.projection_updated(user_id="alice", handler="h", projected=n, correlation_id=None)
        assert [(await next_envelope(conn)).version for _ in range(20)] == list(range(1, 21))
        await eventually(lambda: bridge(service).failed_connects >= 3)
        state = bridge(service)
        assert not state.connected and state.connects == 0 and state.published == 0
        assert state.dropped == 16  # its queue holds 4: the rest never waited for Redis


@pytest.mark.redis
async def test_two_servers_share_envelopes_over_redis(prefix: str, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with serving(tmp_path / "a", bridged(prefix, "server-a")) as a, \
            serving(tmp_path / "b", bridged(prefix, "server-b")) as b:
        await eventually(lambda: bridge(a.realtime).connected and bridge(b.realtime).connected)
        async with client(a, "alice", device="phone") as phone, client(b, "alice", device="laptop") as laptop:
            a.realtime.sync_changed(event_id="o:1", user_id="alice", entity_type="goal", entity_id="g", version=1,
                                    payload={}, origin_device="phone", correlation_id="req-7")
            got = await next_json(laptop)
            assert (got["eventId"], got["type"], got["correlationId"]) == ("o:1", "sync.changed", "req-7")
            b.realtime.projection_updated(user_id="alice", handler="h", projected=2, correlation_id=None)
            assert (await next_json(phone))["eventId"] == "h:alice:2"  # not o:1: its own device's change


OPEN_FOR = 1.0  # the Redis breaker's open period here (30 s in production)


@pytest.mark.slow
async def test_the_bridge_trips_the_redis_breaker_in_an_outage_and_closes_it_after(
        private_redis: PrivateRedis) -> None:
    breakers = Breakers(BreakersConfig(redis=DependencyPolicy(breaker=replace(
        seeds_breaker(call_timeout=1.0, consecutive_failures=3), open_for=OPEN_FOR))), seed=1)
    shown = breakers_health(breakers)  # what /health's circuitBreakers says

    def redis_state() -> str:
        return str(shown()["redis"]["state"])

    sent = 0

    async def deliver_locally(conn: Connection, service: RealtimeService) -> None:
        nonlocal sent
        sent += 1
        service.projection_updated(user_id="alice", handler="h", projected=sent, correlation_id=None)
        assert (await next_envelope(conn)).version == sent

    async def until(predicate: Callable[[], bool], what: str, conn: Connection, service: RealtimeService) -> None:
        with trio.move_on_after(15):
            while not predicate():
                await deliver_locally(conn, service)  # never held up by Redis
                await trio.sleep(0.05)
            return
        pytest.fail(f"not within 15 s: {what}; breaker {shown()['redis']}, bridge {bridge(service)}")

    # The application's wiring: the realtime domain gets the registry's Redis dependency.
    domain = RealtimeDomain(bridged("vigil-test:outage:", "p1", url=private_redis.url), redis=breakers[REDIS])
    async with ActorSystem.start(Supervisor("root", children=[domain.subtree()]), seed=3) as system, \
            system.telemetry.subscribe(kinds=["breaker_changed"]) as events:
        breakers.publish_to(system.telemetry)
        service = domain.service(system)
        await eventually(lambda: bridge(service).connected)
        async with service.connect("alice") as conn:
            await until(lambda: bridge(service).published >= 3, "published before the outage", conn, service)
            assert redis_state() == "closed"
            calls_before = breakers[REDIS].breaker.snapshot().requests
            assert calls_before > 0  # the bridge's connect, subscribe and publishes are calls of the breaker

            private_redis.kill()
            await until(lambda: redis_state() == "open", "the redis breaker opens", conn, service)
            failed = bridge(service).publish_failures
            await until(lambda: bridge(service).publish_failures > failed, "publishes refused", conn, service)
            assert shown()["redis"]["rejects"] > 0  # refused at once by the open breaker, not timed out

            private_redis.start()  # same port, an empty server
            await until(lambda: redis_state() == "closed", "the redis breaker closes again", conn, service)
            published = bridge(service).published
            await until(lambda: bridge(service).published > published, "publishes again", conn, service)
        transitions = [(e.from_state, e.to_state) for e in system.telemetry.drain(events)]
        await system.stop()
    assert ("closed", "open") in transitions and ("half_open", "closed") in transitions, transitions
