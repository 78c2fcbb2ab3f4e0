"""The operator page's figures: chart points from two readings (pure), the sampler under MockClock,
``GET /v1/ops/summary`` and ``GET /ops`` in-process, and the dependency series of /metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
import trio
import trio.testing

from kernel import Actor, ActorSystem, ChildSpec, Supervisor
from storage import PoolStats
from transport import Dependencies, HistoryConfig, Settings, create_app
from transport._metrics import DependencyCollector, RequestLatency, ResponseClasses
from transport._ops_history import OpsHistory, Reading, point, quantile

OPS = "ops-token-for-unit-tests-0123456789abcdef"
SETTINGS = Settings(jwt_secret="j" * 64, ops_token=OPS)
OPS_HEADERS = {"Authorization": f"Bearer {OPS}"}
BOUNDS = (0.01, 0.1, 1.0)


def reading(at: float, responses: int = 0, errors: int = 0, buckets: tuple[int, ...] = (0, 0, 0, 0),
            restarts: int = 0, **kw: Any) -> Reading:
    return Reading(at=at, responses=responses, errors=errors, buckets=buckets, restarts=restarts, **kw)


# -- pure ----------------------------------------------------------------------------------------------
def test_quantile_interpolates_within_its_bucket_and_stops_at_the_last_bound() -> None:
    assert quantile(BOUNDS, [0, 0, 0, 0], 0.99) is None
    assert quantile(BOUNDS, [10, 0, 0, 0], 0.5) == pytest.approx(0.005)
    assert quantile(BOUNDS, [0, 100, 0, 0], 0.99) == pytest.approx(0.01 + 0.09 * 0.99)
    assert quantile(BOUNDS, [98, 1, 1, 0], 0.99) == pytest.approx(0.1)  # the 99th of 100 is the 0.1 s one
    assert quantile(BOUNDS, [1, 0, 0, 99], 0.99) == 1.0  # past every bound: the last bound


def test_a_point_is_what_happened_between_two_readings() -> None:
    before = reading(10.0, responses=100, errors=1, buckets=(90, 10, 0, 0), restarts=2)
    after = reading(12.0, responses=300, errors=5, buckets=(90, 10, 200, 0), restarts=5, lanes=(("hot", 3),),
                    outbox_pending=7, outbox_oldest_seconds=1.5, projection_lag=4, dead_letters=1)
    p = point(before, after, BOUNDS)
    assert p["at"] == 12.0 and p["requestRate"] == 100.0 and p["errorRatio"] == pytest.approx(0.02)
    assert p["p99Ms"] == pytest.approx((0.1 + 0.9 * 0.99) * 1000)  # only the 200 new ones, all in (0.1, 1]
    assert p["restarts"] == 3 and p["lanes"] == {"hot": 3}
    assert (p["outboxPending"], p["outboxOldestSeconds"], p["projectionLag"], p["deadLetters"]) == (7, 1.5, 4, 1)
    idle = point(after, replace(after, at=13.0), BOUNDS)
    assert idle["requestRate"] == 0.0 and idle["errorRatio"] == 0.0 and idle["p99Ms"] is None
    assert idle["restarts"] == 0


def test_history_config_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        HistoryConfig(interval=0)
    with pytest.raises(ValueError):
        HistoryConfig(keep=1)


# -- the sampler -----------------------------------------------------------------------------------------
async def test_the_sampler_keeps_one_point_per_interval_up_to_keep(autojump_clock: trio.testing.MockClock) -> None:
    served = [0]

    def read() -> Reading:
        served[0] += 10
        return reading(trio.current_time(), responses=served[0], buckets=(served[0], 0, 0, 0))

    history = OpsHistory(read, BOUNDS, HistoryConfig(interval=1.0, keep=3))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(history.run)
        await trio.sleep(2.5)
        two = history.points()
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert [p["requestRate"] for p in two] == [10.0, 10.0]
    kept = history.points()
    assert len(kept) == 3 and kept[-1]["at"] == pytest.approx(12.0)
    assert history.points(since=kept[0]["at"]) == kept[1:]
    assert history.points(since=float("nan")) == kept


# -- in-process app -------------------------------------------------------------------------------------
class Worker(Actor):
    async def receive(self, msg: Any) -> Any:
        return msg


@pytest.fixture
async def system() -> AsyncIterator[ActorSystem]:
    async with ActorSystem.start(Supervisor("root", max_restarts=100, within=1.0,
                                            children=[ChildSpec("worker", Worker)]), seed=7) as system:
        yield system


async def test_summary_serves_the_sampled_points_and_restarts(system: ActorSystem,
                                                               autojump_clock: trio.testing.MockClock) -> None:
    pool = PoolStats(in_use=1, open=2, max_size=10)
    app = create_app(SETTINGS, system=system, dependencies=Dependencies(pool_stats=lambda: pool),
                     history=HistoryConfig(interval=0.5, keep=100))
    async with app.test_app() as test_app:
        client = test_app.test_client()
        assert (await client.get("/v1/ops/summary")).status_code == 401
        await trio.sleep(0.6)
        system.inject_crash("root/worker", RuntimeError("boom"))
        await trio.sleep(1.1)
        body = await (await client.get("/v1/ops/summary", headers=OPS_HEADERS)).get_json()
        assert body["intervalSeconds"] == 0.5 and body["lanes"] == [] and body["pool"] == {
            "inUse": 1, "open": 2, "maxSize": 10}
        assert len(body["points"]) >= 2 and sum(p["restarts"] for p in body["points"]) == 1
        last = body["points"][-1]["at"]
        later = await (await client.get("/v1/ops/summary", headers=OPS_HEADERS,
                                        query_string={"since": str(last)})).get_json()
        assert all(p["at"] > last for p in later["points"])
        bad = await client.get("/v1/ops/summary", headers=OPS_HEADERS, query_string={"since": "soon"})
        assert bad.status_code == 400


async def test_the_page_is_served_from_the_package(system: ActorSystem) -> None:
    client = create_app(SETTINGS, system=system).test_client()
    page = await client.get("/ops")
    assert page.status_code == 200 and page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert b'id="login-form"' in await page.get_data()
    css = await client.get("/ops/assets/ops.css")
    assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css")
    assert (await client.get("/ops/assets/nope.js")).status_code == 404


# -- /metrics: dependencies and response classes --------------------------------------------------------
async def test_redis_up_is_probed_per_scrape_and_a_slow_probe_is_down(autojump_clock: trio.testing.MockClock) -> None:
    answers = {"up": True, "hang": False}

    async def probe() -> bool:
        if answers["hang"]:
            await trio.sleep_forever()
        return answers["up"]

    collector = DependencyCollector(Dependencies(pool_stats=lambda: PoolStats(3, 4, 5), redis_up=probe,
                                                 probe_timeout=1.0))
    names = {m.name: m.samples for m in collector.collect()}
    assert "vigil_redis_up" not in names  # not probed yet: no guess
    assert [s.value for s in names["vigil_store_pool_connections_in_use"]] == [3.0]
    assert [s.value for s in names["vigil_store_pool_connections_max"]] == [5.0]
    for up, hang, expected in ((True, False, 1.0), (False, False, 0.0), (True, True, 0.0)):
        answers.update(up=up, hang=hang)
        started = trio.current_time()
        await collector.probe()
        assert trio.current_time() - started <= 1.0
        samples = {m.name: m.samples for m in collector.collect()}["vigil_redis_up"]
        assert [s.value for s in samples] == [expected]
    assert list(DependencyCollector(Dependencies()).collect()) == []


def test_responses_are_counted_by_status_class() -> None:
    latency = RequestLatency()
    for status in (200, 201, 404, 503, 500):
        latency.observe("GET", "/x", status, 0.002)
    (responses,) = list(ResponseClasses(latency).collect())
    assert {s.labels["status_class"]: s.value for s in responses.samples} == {
        "1xx": 0.0, "2xx": 2.0, "3xx": 0.0, "4xx": 1.0, "5xx": 2.0}
    classes, buckets = latency.totals()
    assert classes == {"2xx": 2, "4xx": 1, "5xx": 2} and sum(buckets) == 5
