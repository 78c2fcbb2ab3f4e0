"""The dependencies' breakers through the operator surface: /health's circuitBreakers (API.md shape), /metrics,
the telemetry WebSocket's breaker frames, and STORE_UNAVAILABLE's retryAfterMs from an open breaker."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing
from quart import Blueprint

from kernel import POSTGRES, REDIS, ActorSystem, Breakers, ChildSpec, Supervisor
from storage import StoreCircuitOpen
from tests.unit.test_transport_ops import OPS_HEADERS, SETTINGS, Worker
from transport import create_app, to_api_error


@pytest.fixture
async def system() -> AsyncIterator[ActorSystem]:
    async with ActorSystem.start(Supervisor("root", children=[ChildSpec("worker", Worker)]), seed=7) as system:
        yield system


def _open(breakers: Breakers, name: str) -> None:
    breaker = breakers[name].breaker
    while breaker.state == "closed":
        assert breaker.allow()
        breaker.record_failure()


async def test_health_shows_each_breaker_with_its_counts(system: ActorSystem,
                                                         autojump_clock: trio.testing.MockClock) -> None:
    breakers = Breakers(seed=1)
    app = create_app(SETTINGS, system=system, breakers=breakers)
    body = await (await app.test_client().get("/health")).get_json()
    assert body["status"] == "healthy"
    assert set(body["circuitBreakers"]) == {"postgres", "redis", "anthropic", "s3"}
    assert body["circuitBreakers"]["postgres"] == {
        "state": "closed", "requests": 0, "successes": 0, "failures": 0, "rejects": 0, "consecutiveFailures": 0,
        "windowCalls": 0, "windowFailures": 0, "retryAfterMs": 0, "retries": 0}

    _open(breakers, REDIS)
    assert not breakers[REDIS].breaker.allow()
    breakers[REDIS].count_retry()
    body = await (await app.test_client().get("/health")).get_json()
    redis = body["circuitBreakers"]["redis"]
    assert body["status"] == "degraded"  # a breaker not closed degrades; the database check decides 503
    assert (redis["state"], redis["failures"], redis["rejects"], redis["retries"]) == ("open", 3, 1, 1)
    assert redis["retryAfterMs"] == 30_000 and redis["windowCalls"] == 0  # the window starts afresh when it opens
    await trio.sleep(30.0)
    body = await (await app.test_client().get("/health")).get_json()
    assert body["circuitBreakers"]["redis"]["state"] == "half_open"


async def test_metrics_export_breaker_state_failures_and_retries(system: ActorSystem) -> None:
    breakers = Breakers(seed=1)
    _open(breakers, POSTGRES)
    breakers[S3 := "s3"].count_retry()
    app = create_app(SETTINGS, system=system, breakers=breakers)
    text = (await (await app.test_client().get("/metrics", headers=OPS_HEADERS)).get_data()).decode()
    assert 'vigil_circuit_breaker_state{breaker="postgres"} 1.0' in text
    assert 'vigil_circuit_breaker_state{breaker="redis"} 0.0' in text
    assert 'vigil_circuit_breaker_failures_total{breaker="postgres"} 5.0' in text
    assert f'vigil_retry_attempts_total{{dependency="{S3}"}} 1.0' in text
    assert 'vigil_circuit_breaker_rejections_total{breaker="postgres"} 0.0' in text


async def test_breaker_changes_stream_on_the_telemetry_websocket(system: ActorSystem) -> None:
    breakers = Breakers(seed=1)
    breakers.publish_to(system.telemetry)
    app = create_app(SETTINGS, system=system, breakers=breakers)
    async with app.test_client().websocket("/v1/ops/telemetry", headers=OPS_HEADERS) as ws:
        with trio.fail_after(5):
            while not system.telemetry.subscriber_count:  # noqa: ASYNC110 - until the socket subscribed
                await trio.sleep(0.01)
            _open(breakers, REDIS)
            while True:
                frame = json.loads(await ws.receive())
                if frame["kind"] == "breaker_changed":
                    break
    assert (frame["breaker"], frame["from"], frame["to"], frame["path"]) == ("redis", "closed", "open",
                                                                            "breakers/redis")


async def test_store_unavailable_carries_the_breakers_retry_after(system: ActorSystem) -> None:
    err = to_api_error(StoreCircuitOpen("the database is unavailable", retry_after=12.3456))
    assert (err.status, err.code, err.retryable, err.retry_after_ms) == (503, "STORE_UNAVAILABLE", True, 12346)
    bp = Blueprint("down", __name__)

    @bp.get("/down")
    async def down() -> None:
        raise StoreCircuitOpen("the database is unavailable", retry_after=2.5)

    app = create_app(SETTINGS, system=system)
    app.register_blueprint(bp)
    response = await app.test_client().get("/down")
    body = await response.get_json()
    assert response.status_code == 503 and response.headers["Retry-After"] == "3"
    assert body["error"]["code"] == "STORE_UNAVAILABLE" and body["error"]["retryAfterMs"] == 2500
