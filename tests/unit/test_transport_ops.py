"""Operator endpoints (API.md "Operators"): /health, /metrics, /v1/ops/supervision and the
/v1/ops/telemetry WebSocket, against a real kernel in-process."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
import trio
import trio.testing
from quart.testing.connections import WebsocketDisconnectError
from quart_trio import QuartTrio

from kernel import Actor, ActorSystem, ChildSpec, MailboxStatistics, NodeSnapshot, Supervisor
from transport import (
    WS_GOING_AWAY,
    WS_UNAUTHENTICATED,
    CheckResult,
    HealthRegistry,
    Settings,
    app_context,
    begin_drain,
    create_app,
    event_to_dict,
)
from transport._metrics import ActorTreeCollector

OPS = "ops-token-for-unit-tests-0123456789abcdef"
SETTINGS = Settings(jwt_secret="j" * 64, ops_token=OPS)
OPS_HEADERS = {"Authorization": f"Bearer {OPS}"}


class Worker(Actor):
    async def receive(self, msg: Any) -> Any:
        return msg


def tree() -> Supervisor:
    return Supervisor("root", max_restarts=100, within=1.0,
                      children=[ChildSpec("worker", Worker, mailbox=8)])


@pytest.fixture
async def system() -> AsyncIterator[ActorSystem]:
    async with ActorSystem.start(tree(), seed=7) as system:
        yield system


@pytest.fixture
def app(system: ActorSystem) -> QuartTrio:
    return create_app(SETTINGS, system=system)


# -- /health -----------------------------------------------------------------------------------------
async def test_health_is_healthy_without_auth(app: QuartTrio) -> None:
    response = await app.test_client().get("/health")
    assert response.status_code == 200
    body = await response.get_json()
    assert body["status"] == "healthy"
    assert body["checks"]["actors"]["status"] == "ok"
    assert body["circuitBreakers"] == {}


async def test_health_is_503_with_retry_after_when_the_root_stopped(system: ActorSystem, app: QuartTrio) -> None:
    await system.stop()
    response = await app.test_client().get("/health")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    body = await response.get_json()
    assert body["status"] == "unhealthy"
    assert body["checks"]["actors"]["status"] == "down"


async def test_health_is_503_while_draining(app: QuartTrio) -> None:
    begin_drain(app)
    response = await app.test_client().get("/health")
    assert response.status_code == 503
    assert (await response.get_json())["checks"]["server"]["detail"] == "shutting down"


async def test_pluggable_checks_degrade_and_fail(system: ActorSystem, autojump_clock: trio.testing.MockClock) -> None:
    health = HealthRegistry()

    async def redis_degraded() -> CheckResult:
        return CheckResult("degraded", "replica lag")

    async def optional_down() -> bool:
        raise ConnectionError("refused")

    async def storage_hangs() -> bool:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    health.add_check("redis", redis_degraded)
    health.add_check("exports", optional_down, critical=False)
    health.add_breakers(lambda: {"anthropic": "closed"})
    app = create_app(SETTINGS, system=system, health=health)
    body = await (await app.test_client().get("/health")).get_json()
    assert body["status"] == "degraded"
    assert body["checks"]["exports"] == {"status": "down", "critical": False, "detail": "ConnectionError: refused",
                                         "durationMs": 0.0}
    assert body["circuitBreakers"] == {"anthropic": {"state": "closed"}}

    health.add_check("storage", storage_hangs)
    response = await app.test_client().get("/health")
    body = await response.get_json()
    assert response.status_code == 503
    assert body["checks"]["storage"]["detail"] == "timed out"
    assert body["checks"]["storage"]["durationMs"] == pytest.approx(SETTINGS.health_check_timeout * 1000)


async def test_open_breaker_degrades(system: ActorSystem) -> None:
    health = HealthRegistry()
    health.add_breakers(lambda: {"anthropic": "open"})
    body = await (await create_app(SETTINGS, system=system, health=health).test_client().get("/health")).get_json()
    assert body["status"] == "degraded"


# -- /v1/ops/supervision -----------------------------------------------------------------------------
async def test_supervision_returns_the_live_tree(system: ActorSystem, app: QuartTrio) -> None:
    assert await system.ref("root/worker").ask("hi") == "hi"
    response = await app.test_client().get("/v1/ops/supervision", headers=OPS_HEADERS)
    assert response.status_code == 200
    root = await response.get_json()
    assert (root["name"], root["path"], root["kind"], root["state"]) == ("root", "root", "supervisor", "running")
    worker = root["children"][0]
    assert worker["path"] == "root/worker" and worker["kind"] == "actor"
    assert worker["mailbox"] == {"depth": 0, "capacity": 8}
    assert worker["processed"] == 1 and worker["lastFailure"] is None
    assert {"crashes", "deadLetters"} <= set(worker)  # kernel extras pass through


async def test_supervision_renders_every_kind_of_node_in_the_api_shape() -> None:
    tree = Supervisor("root", max_restarts=100, within=1.0, children=[
        ChildSpec("worker", Worker, mailbox=8),
        ChildSpec("devices", lambda key: Worker(), keyed=True, mailbox=4, max_live=50),
    ])
    async with ActorSystem.start(tree, seed=7) as system:
        await system.ref("root/devices").key("d1").ask("hi")
        system.inject_crash("root/worker", ValueError("boom"))
        await trio.testing.wait_all_tasks_blocked()
        root = await (await create_app(SETTINGS, system=system).test_client().get(
            "/v1/ops/supervision", headers=OPS_HEADERS)).get_json()
    base = {"name", "path", "kind", "state", "restarts", "crashes", "lastFailure", "mailbox", "processed",
            "deadLetters", "children"}
    worker, devices = root["children"]
    assert set(root) == base | {"strategy"} and root["strategy"] == "one_for_one"
    assert set(worker) == base
    failure = worker["lastFailure"]
    assert (failure["type"], failure["message"]) == ("ValueError", "boom")
    assert isinstance(failure["atMonotonic"], float) and failure["at"].endswith("Z")
    assert datetime.fromisoformat(failure["at"].replace("Z", "+00:00"))
    assert set(devices) == base | {"live", "maxLive", "passivated", "childrenTruncated"}
    assert (devices["kind"], devices["live"], devices["maxLive"], devices["childrenTruncated"]) == ("keyed", 1, 50, False)
    assert devices["mailbox"] == {"depth": 0, "capacity": 4}
    (d1,) = devices["children"]
    assert set(d1) == base | {"key"} and (d1["key"], d1["kind"], d1["path"]) == ("d1", "actor", "root/devices/d1")


async def test_supervision_requires_the_ops_token(app: QuartTrio) -> None:
    response = await app.test_client().get("/v1/ops/supervision")
    assert response.status_code == 401
    assert (await response.get_json())["error"]["code"] == "UNAUTHENTICATED"


# -- /metrics ----------------------------------------------------------------------------------------
def samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


async def test_metrics_derive_actor_series_from_the_tree(system: ActorSystem, app: QuartTrio) -> None:
    for _ in range(3):
        await system.ref("root/worker").ask("x")
    system.inject_crash("root/worker")
    await trio.testing.wait_all_tasks_blocked()
    client = app.test_client()
    await client.get("/health")
    response = await client.get("/metrics", headers=OPS_HEADERS)
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    got = samples(await response.get_data(as_text=True))
    assert got['vigil_actor_mailbox_capacity{path="root/worker"}'] == 8
    assert got['vigil_actor_mailbox_depth{path="root/worker"}'] == 0
    assert got['vigil_actor_processed_total{path="root/worker"}'] == 3
    assert got['vigil_actor_crashes_total{path="root/worker"}'] == 1
    assert got['vigil_actor_restarts_total{path="root/worker"}'] == 1
    assert 'vigil_actor_dead_letters_total{path="root/worker"}' in got
    assert got['vigil_http_request_duration_seconds_count{method="GET",route="/health",status="200"}'] == 1


async def test_metrics_use_route_templates_not_raw_paths(app: QuartTrio) -> None:
    client = app.test_client()
    await client.get("/no/such/path/123")
    text = await (await client.get("/metrics", headers=OPS_HEADERS)).get_data(as_text=True)
    assert 'route="<unmatched>",status="404"' in text
    assert "/no/such/path" not in text


async def test_metrics_require_the_ops_token(app: QuartTrio) -> None:
    assert (await app.test_client().get("/metrics")).status_code == 401


def test_collector_reports_keyed_groups_as_one_series() -> None:
    mailbox = MailboxStatistics(depth=5, capacity=16, blocked_senders=0)
    entity = NodeSnapshot(name="u1:phone", path="root/devices/u1:phone", kind="actor", state="running", restarts=0,
                          crashes=0, last_failure=None, mailbox=mailbox, processed=3, dead_letters=0, key="u1:phone")
    group = NodeSnapshot(name="devices", path="root/devices", kind="keyed", state="running", restarts=0, crashes=2,
                         last_failure=None, mailbox=mailbox, processed=40, dead_letters=1, children=(entity,),
                         live=2, max_live=10, passivated=0, children_truncated=False)

    class Fake:
        def tree(self) -> NodeSnapshot:
            return NodeSnapshot(name="root", path="root", kind="supervisor", state="running", restarts=0, crashes=0,
                                last_failure=None, mailbox=None, processed=0, dead_letters=0, children=(group,),
                                strategy="one_for_one")

    families = {f.name: f for f in ActorTreeCollector(Fake()).collect()}
    by_path = {s.labels["path"]: s.value for s in families["vigil_actor_processed"].samples}
    assert by_path == {"root/devices": 40}  # no per-key series: user ids stay out of labels
    assert {s.labels["path"]: s.value for s in families["vigil_actor_keyed_live"].samples} == {"root/devices": 2}


# -- /v1/ops/telemetry -------------------------------------------------------------------------------
async def _expect_close(ws: Any) -> int:
    with pytest.raises(WebsocketDisconnectError) as info:
        while True:
            await ws.receive()
    return int(info.value.args[0])


@pytest.mark.parametrize("query", ["", "?token=wrong"])
async def test_telemetry_rejects_a_bad_token_with_4401(app: QuartTrio, query: str) -> None:
    async with app.test_client().websocket("/v1/ops/telemetry" + query) as ws:
        assert await _expect_close(ws) == WS_UNAUTHENTICATED


@pytest.mark.parametrize("how", ["query", "header"])
async def test_telemetry_streams_kernel_events(system: ActorSystem, app: QuartTrio, how: str) -> None:
    path, headers = ("/v1/ops/telemetry", OPS_HEADERS) if how == "header" else (f"/v1/ops/telemetry?token={OPS}", {})
    async with app.test_client().websocket(path, headers=headers) as ws:
        await trio.testing.wait_all_tasks_blocked()  # the handler has subscribed
        system.inject_crash("root/worker", ValueError("boom"))
        frames = [json.loads(await ws.receive()) for _ in range(2)]
    crashed = next(f for f in frames if f["kind"] == "crashed")
    assert crashed["path"] == "root/worker"
    assert crashed["errorType"] == "ValueError" and crashed["errorMessage"] == "boom"
    assert isinstance(crashed["at"], float) and crashed["timestamp"].endswith("Z")
    assert {"kind", "path", "at", "attempt", "delay", "errorType", "errorMessage"} <= set(crashed)
    assert any(f["kind"] == "restarted" and f["attempt"] == 1 for f in frames)


async def test_telemetry_closes_with_1001_when_draining(app: QuartTrio) -> None:
    async with app.test_client().websocket("/v1/ops/telemetry", headers=OPS_HEADERS) as ws:
        await trio.testing.wait_all_tasks_blocked()
        begin_drain(app)
        assert await _expect_close(ws) == WS_GOING_AWAY
    assert app_context(app).system.telemetry.subscriber_count == 0  # type: ignore[attr-defined]


def test_event_to_dict_uses_camel_case_and_tolerates_missing_fields() -> None:
    class Minimal:
        kind, path, at = "started", "root/x", 1.5

    assert event_to_dict(Minimal()) == {"kind": "started", "path": "root/x", "at": 1.5, "attempt": None,
                                        "delay": None, "errorType": None, "errorMessage": None, "detail": None}
