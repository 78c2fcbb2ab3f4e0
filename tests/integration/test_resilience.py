"""Degraded modes, proven by stopping the real dependency mid-load and starting it again (issue 13).

* PostgreSQL (a cluster of the test's own) stops under a stream of uploads: answers turn into 503
  STORE_UNAVAILABLE with ``retryAfterMs`` from the breaker, fast once it is open; /health is 503; the breaker's
  transitions stream as telemetry; it starts again and uploads succeed without a restart; every upload that
  got a 200 is in the database.
* Redis (a redis-server of the test's own) stops while uploads go on: /health says degraded (200), uploads keep
  their 200s, Redis calls are refused fast while the breaker is open; it starts again and all is healthy.

Real time throughout (real servers); breakers open for ``OPEN_FOR`` seconds instead of 30 so the tests finish.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
import trio
import trio_asyncio

from actors.realtime import RealtimeConfig
from actors.supervisor import application
from kernel import POSTGRES, REDIS, ActorSystem, Breakers, BreakersConfig, DependencyPolicy, seeds_breaker
from storage import open_store
from storage.coordination import (
    CoordinationConfig,
    CoordinationUnavailable,
    RedisConfig,
    leases_with_fallback,
    open_coordination,
)
from tests.ingest_helpers import BATCH, SETTINGS, fast_tree_config, headers, sample, signed
from tests.integration.test_coordination_redis import PrivateRedis, private_redis  # noqa: F401 - the fixture
from tests.resilience_helpers import PrivatePostgres, private_postgres
from transport import HealthRegistry, VigilApp, coordination_check, create_app, store_check

pytestmark = pytest.mark.slow

OPEN_FOR = 2.0
BREAKERS = BreakersConfig(
    postgres=DependencyPolicy(breaker=replace(seeds_breaker(call_timeout=5.0), open_for=OPEN_FOR)),
    redis=DependencyPolicy(breaker=replace(seeds_breaker(call_timeout=1.0, consecutive_failures=3),
                                           open_for=OPEN_FOR)))
FAST = 0.25  # seconds: an answer while the breaker is open (the test client's own overhead included)


@dataclass
class Load:
    """Uploads from a few users, each with its own record ids; what got a 200 is remembered."""

    app: VigilApp
    acknowledged: dict[str, set[str]] = field(default_factory=dict)  # user -> record ids answered 200
    statuses: list[tuple[int, str | None]] = field(default_factory=list)
    stop: trio.Event = field(default_factory=trio.Event)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    async def post_one(self, user: str) -> tuple[int, Any, Any]:
        records = [f"{user}-r{next(self._ids)}" for _ in range(3)]
        body = signed([sample(r, start=f"2026-11-24T08:{i:02d}:00Z") for i, r in enumerate(records)])
        response = await self.app.test_client().post(BATCH, data=json.dumps(body).encode(),
                                                      headers={**headers(user), "Content-Type": "application/json"})
        data = await response.get_json()
        code = data["error"]["code"] if response.status_code != 200 else None
        self.statuses.append((response.status_code, code))
        if response.status_code == 200:
            self.acknowledged.setdefault(user, set()).update(records)
        return response.status_code, data, response.headers

    async def run(self, user: str) -> None:
        while not self.stop.is_set():
            await self.post_one(user)
            await trio.sleep(0.01)

    def oks(self) -> int:
        return sum(len(v) for v in self.acknowledged.values())


async def _until(predicate: Any, seconds: float, what: str) -> None:
    with trio.move_on_after(seconds):
        while not await predicate():  # noqa: ASYNC110 - polling a real server's state, under a deadline
            await trio.sleep(0.05)
        return
    pytest.fail(f"not within {seconds} s: {what}")


@asynccontextmanager
async def _app_over(dsn: str, breakers: Breakers, redis_url: str | None = None) -> AsyncIterator[VigilApp]:
    """The application as run.py wires it: one Breakers registry for storage, coordination and transport."""
    async with trio_asyncio.open_loop(), open_store(dsn, breakers=breakers) as store:
        health = HealthRegistry()
        health.add_check("database", store_check(store))
        realtime = RealtimeConfig(redis_url=redis_url, redis=RedisConfig(key_prefix="resilience:"))
        async with open_coordination(redis_url, config=CoordinationConfig(redis=RedisConfig(key_prefix="resilience:")),
                                     dependency=breakers[REDIS]) as coordination:
            health.add_check("coordination", coordination_check(coordination), critical=False)
            parts = application(store, fast_tree_config(tree={"realtime": realtime}), redis=breakers[REDIS])
            async with ActorSystem.start(parts.tree, seed=1) as system:
                breakers.publish_to(system.telemetry)
                app = create_app(SETTINGS, system=system, services=parts.services(system), health=health,
                                 breakers=breakers)
                app.extensions["coordination"] = coordination
                yield app


async def test_postgres_down_mid_load_fails_fast_recovers_by_itself_and_loses_nothing_acknowledged() -> None:
    with private_postgres() as pg:
        await _postgres_outage(pg)


async def _postgres_outage(pg: PrivatePostgres) -> None:
    breakers = Breakers(BREAKERS, seed=1)
    async with _app_over(pg.dsn, breakers) as app:
        client = app.test_client()
        load = Load(app)
        async with app.extensions["vigil"].system.telemetry.subscribe(kinds=["breaker_changed"]) as events:
            async with trio.open_nursery() as nursery:
                for user in ("alice", "bob", "carol"):
                    nursery.start_soon(load.run, user)
                await _until(lambda: _true(load.oks() >= 30), 30, "uploads succeed before the outage")

                pg.stop()  # mid-load: connections cut, nothing polite
                await _until(lambda: _true(breakers[POSTGRES].breaker.seconds_open() > 0), 20, "the breaker opens")

                # Typed, fast failures while it is open: 503 STORE_UNAVAILABLE with the breaker's retry-after.
                started = trio.current_time()
                status, body, hdrs = await load.post_one("dave")
                elapsed = trio.current_time() - started
                assert status == 503, body
                err = body["error"]
                assert err["code"] == "STORE_UNAVAILABLE" and err["retryable"] is True
                assert 0 < err["retryAfterMs"] <= OPEN_FOR * 1000 and int(hdrs["Retry-After"]) >= 1
                assert elapsed < FAST, f"an open breaker answered in {elapsed:.3f} s"
                health = await client.get("/health")
                report = await health.get_json()
                assert health.status_code == 503 and report["checks"]["database"]["status"] == "down"
                assert report["circuitBreakers"]["postgres"]["state"] in ("open", "half_open")
                assert report["circuitBreakers"]["postgres"]["rejects"] > 0

                pg.start()  # back: no restart of ours, the breaker's probes find it
                back = trio.current_time()
                acknowledged_before = load.oks()
                await _until(lambda: _true(load.oks() > acknowledged_before + 30), 60, "uploads succeed again")
                recovery = trio.current_time() - back
                load.stop.set()
            telemetry = app.extensions["vigil"].system.telemetry
            seen = [(e.from_state, e.to_state) for e in telemetry.drain(events)]
        assert ("closed", "open") in seen and ("half_open", "closed") in seen, seen
        assert recovery < OPEN_FOR + 10, f"first 200s came {recovery:.1f} s after PostgreSQL was back"
        assert (await client.get("/health")).status_code == 200
        assert any(s == 503 and c == "STORE_UNAVAILABLE" for s, c in load.statuses)
        assert not [s for s in load.statuses if s[0] not in (200, 503)], set(load.statuses)

    # Nothing acknowledged is lost: every record answered 200 is in the database (looked at with psql).
    stored = set(pg.query("SELECT source_record_id FROM health_samples"))
    assert load.oks() >= 60 and len(stored) >= load.oks()
    for user, records in load.acknowledged.items():
        missing = records - stored
        assert not missing, f"{user}: {len(missing)} acknowledged samples lost"


async def _true(value: bool) -> bool:
    return value


async def test_redis_down_degrades_health_keeps_uploads_and_recovers_by_itself(
        private_redis: PrivateRedis) -> None:  # noqa: F811 - the fixture
    breakers = Breakers(BREAKERS, seed=1)
    with private_postgres() as pg:
        async with _app_over(pg.dsn, breakers, private_redis.url) as app:
            client = app.test_client()
            coordination = app.extensions["coordination"]
            load = Load(app)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(load.run, "alice")
                await _until(lambda: _true(load.oks() >= 9), 30, "uploads succeed")
                assert (await (await client.get("/health")).get_json())["status"] == "healthy"

                private_redis.kill()
                async def degraded() -> bool:
                    response = await client.get("/health")
                    body = await response.get_json()
                    assert response.status_code == 200, body  # never unhealthy for Redis
                    return bool(body["status"] == "degraded" and body["circuitBreakers"]["redis"]["state"] == "open")

                await _until(degraded, 20, "/health degraded with the redis breaker open")
                started = trio.current_time()
                with pytest.raises(CoordinationUnavailable):
                    await coordination.leases.acquire("reaper", "me", 5.0)
                assert trio.current_time() - started < FAST  # refused by the open breaker, not a timeout
                during = load.oks()
                await _until(lambda: _true(load.oks() >= during + 9), 30, "uploads go on while Redis is down")

                private_redis.start()

                async def healthy() -> bool:
                    body = await (await client.get("/health")).get_json()
                    return bool(body["status"] == "healthy")

                await _until(healthy, OPEN_FOR + 20, "healthy again once Redis is back")
                assert await coordination.leases.acquire("reaper", "me", 5.0)
                load.stop.set()
            assert not [s for s in load.statuses if s[0] != 200], set(load.statuses)


async def test_leases_fall_back_to_postgres_advisory_locks_while_redis_is_down(
        private_redis: PrivateRedis) -> None:  # noqa: F811 - the fixture
    """Two processes' worth of store + coordination (separate sessions and connections) contend for a lease."""
    config = CoordinationConfig(redis=RedisConfig(key_prefix="leases:"))
    with private_postgres() as pg:
        async with trio_asyncio.open_loop(), AsyncExitStack() as stack:
            sides = []
            for _ in range(2):
                breakers = Breakers(BREAKERS, seed=1)
                store = await stack.enter_async_context(open_store(pg.dsn, breakers=breakers))
                coord = await stack.enter_async_context(
                    open_coordination(private_redis.url, config=config, dependency=breakers[REDIS]))
                sides.append((store, leases_with_fallback(coord.leases, store)))
            (store_a, a), (_, b) = sides
            assert await a.acquire("reaper", "a", 5.0)
            assert not await b.acquire("reaper", "b", 5.0)

            private_redis.kill()
            assert await a.renew("reaper", "a", 5.0)  # the advisory lock holds it: Redis down changes nothing
            assert not await b.acquire("reaper", "b", 5.0)
            assert await a.release("reaper", "a")
            assert await b.acquire("reaper", "b", 5.0)  # degraded: PostgreSQL alone decides
            assert not await a.acquire("reaper", "a", 5.0)

            private_redis.start()  # back, and empty
            assert not await a.acquire("reaper", "a", 5.0)  # b still holds it
            assert await b.renew("reaper", "b", 5.0)
            # The holder's session dies (as with its process): the lock goes with it, at once (no ttl to wait out).
            await trio.to_thread.run_sync(pg.query, "SELECT pg_terminate_backend(pid) FROM pg_locks"
                                                    " WHERE locktype = 'advisory' AND granted")
            with trio.fail_after(10):
                while not await a.acquire("reaper", "a", 5.0):  # noqa: ASYNC110 - until the server noticed
                    await trio.sleep(0.05)
            assert not await b.renew("reaper", "b", 5.0)  # b learns it lost the lease
            await b.release("reaper", "b")  # gives the dead connection back (a pool closes only when all are back)
            assert await a.release("reaper", "a")
            assert store_a.breaker is not None and store_a.breaker.snapshot().state == "closed"
