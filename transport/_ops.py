"""Operator endpoints (API.md "Operators"): health, metrics, the supervision tree, live telemetry,
and the OpenAPI document."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Literal

import trio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from quart import current_app
from quart import websocket as current_websocket

from kernel import NodeSnapshot

from ._context import app_context
from ._projections import figures_to_dict
from ._routes import WS_GOING_AWAY, ApiBlueprint, Reply


class CheckModel(BaseModel):
    status: Literal["ok", "degraded", "down"]
    critical: bool
    detail: str | None
    durationMs: float


class HealthResponse(BaseModel):
    status: Literal["healthy", "degraded", "unhealthy"]
    checks: dict[str, CheckModel]
    circuitBreakers: dict[str, str]


class FailureModel(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    message: str
    at: float | str


class MailboxModel(BaseModel):
    depth: int
    capacity: int


class SupervisionNode(BaseModel):
    """A node of the live supervision tree; the kernel may add fields (kept as they are)."""

    model_config = ConfigDict(extra="allow")
    name: str
    path: str
    kind: str = Field(description="actor, supervisor or keyed")
    state: str
    restarts: int
    lastFailure: FailureModel | None
    mailbox: MailboxModel | None
    processed: int
    children: list[SupervisionNode]


def event_to_dict(event: Any, wall_time: Callable[[float], str] | None = None) -> dict[str, Any]:
    """A kernel telemetry event as the JSON frame of ``/v1/ops/telemetry``; ``at`` is trio's clock,
    ``timestamp`` its RFC 3339 wall-clock reading when the system can provide one."""
    frame = {
        "kind": event.kind,
        "path": event.path,
        "at": event.at,
        "attempt": getattr(event, "attempt", None),
        "delay": getattr(event, "delay", None),
        "errorType": getattr(event, "error_type", None),
        "errorMessage": getattr(event, "error_message", None),
        "detail": getattr(event, "detail", None),
    }
    if wall_time is not None:
        frame["timestamp"] = wall_time(event.at)
    return frame


def supervision_to_dict(node: NodeSnapshot, wall_time: Callable[[float], str] | None = None) -> dict[str, Any]:
    """A kernel tree snapshot as the JSON of ``GET /v1/ops/supervision``: camelCase, and a failure's
    ``at`` as RFC 3339 (``atMonotonic`` keeps trio's clock) when the system can convert it."""
    failure = node.last_failure
    out: dict[str, Any] = {
        "name": node.name,
        "path": node.path,
        "kind": node.kind,
        "state": node.state,
        "restarts": node.restarts,
        "crashes": node.crashes,
        "lastFailure": None if failure is None else {
            "type": failure.type, "message": failure.message,
            "at": wall_time(failure.at) if wall_time is not None else failure.at, "atMonotonic": failure.at,
        },
        "mailbox": None if node.mailbox is None else {"depth": node.mailbox.depth, "capacity": node.mailbox.capacity},
        "processed": node.processed,
        "deadLetters": node.dead_letters,
        "children": [supervision_to_dict(child, wall_time) for child in node.children],
    }
    # What one kind of node adds, under the names the API has always used.
    if node.strategy is not None:
        out["strategy"] = node.strategy
    if node.kind == "keyed":
        out.update(live=node.live, maxLive=node.max_live, passivated=node.passivated,
                   childrenTruncated=node.children_truncated)
    if node.key is not None:
        out["key"] = node.key
    return out


def ops_blueprint() -> ApiBlueprint:
    ops = ApiBlueprint("ops", tags=["operators"])

    @ops.get("/openapi.json", auth="none", summary="The OpenAPI 3.1 document of every HTTP endpoint")
    async def openapi() -> Any:
        return current_app.response_class(app_context().openapi_json, content_type="application/json")

    @ops.get("/health", auth="none", response=HealthResponse, errors=[503],
             summary="Liveness and dependency checks; 503 when unhealthy")
    async def health() -> Any:
        context = app_context()
        report = await context.health.run(context.settings.health_check_timeout)
        if report.http_status == 503:
            return Reply(report.to_dict(), status=503, headers={"Retry-After": "1"})
        return report.to_dict()

    @ops.get("/metrics", auth="ops", media_type=CONTENT_TYPE_LATEST.split(";")[0],
             summary="Prometheus metrics: actors (from the live tree) and HTTP latency")
    async def metrics() -> Any:
        context = app_context()
        await context.metrics.dependencies.probe()  # Redis answers now or counts as down
        body = generate_latest(context.metrics.registry)
        return current_app.response_class(body, content_type=CONTENT_TYPE_LATEST)

    @ops.get("/v1/ops/supervision", auth="ops", response=SupervisionNode,
             summary="The live supervision tree")
    async def supervision() -> Any:
        context = app_context()
        tree = supervision_to_dict(context.system.tree(), getattr(context.system, "wall_time", None))
        if context.domains is not None:  # outbox and projection lag beside the tree (API.md "Operators")
            tree["projection"] = figures_to_dict(context.domains.projection.figures())
        return tree

    @ops.websocket("/v1/ops/telemetry", auth="ops",
                   summary="Live lifecycle events (JSON frames); closes with 1001 on shutdown")
    async def telemetry() -> None:
        context = app_context()
        wall_time = getattr(context.system, "wall_time", None)
        async with trio.open_nursery() as nursery:

            async def close_on_drain() -> None:
                await context.draining.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(close_on_drain)
            async with context.system.telemetry.subscribe() as events:
                async for event in events:
                    await current_websocket.send(json.dumps(event_to_dict(event, wall_time), default=str))
            nursery.cancel_scope.cancel()  # the stream ended by itself
        if context.draining.is_set():
            await current_websocket.close(WS_GOING_AWAY, "server shutting down")

    return ops


__all__ = ["HealthResponse", "SupervisionNode", "event_to_dict", "ops_blueprint", "supervision_to_dict"]
