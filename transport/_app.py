"""The app factory: a Quart-Trio app with its dependencies on it, no module-level state."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import trio
from quart import g, has_request_context, request
from quart.typing import ResponseTypes
from quart_trio import QuartTrio

from actors.supervisor import Services
from kernel import Breakers
from storage.coordination import RateLimiter

from ._ai import ai as ai_api
from ._auth import TokenVerifier
from ._context import EXTENSION_KEY, ActorSystemLike, AppContext, app_context
from ._errors import ApiError, InternalError, PayloadTooLarge, error_response, to_api_error
from ._exports import exports as exports_api
from ._health import HealthRegistry, actor_system_check, draining_check
from ._limits import RateLimitConfig, RateLimits, quota_headers
from ._logging import AccessLog, server_time
from ._metrics import Dependencies, HttpMetrics
from ._openapi import build_openapi
from ._ops import ops_blueprint
from ._ops_history import HistoryConfig, OpsHistory, app_reader
from ._ops_page import load_static, ops_page_blueprint
from ._projections import outbox_ops, read_side
from ._realtime import realtime as realtime_api
from ._resilience import breakers_health
from ._routes import ApiBlueprint, RequestIds, RouteSpec, access_log, current_request_id
from ._samples import health as health_api
from ._settings import Settings, warn_about_dev_defaults
from ._sync import sync as sync_api
from ._users import users as users_api

log = logging.getLogger("vigil.transport")

API_TITLE = "Vigil"
API_VERSION = "1"
UNMATCHED_ROUTE = "<unmatched>"  # one label for every 404, so scanners cannot blow up cardinality


class VigilApp(QuartTrio):
    async def handle_exception(self, error: Exception) -> ResponseTypes:
        """Last resort, for errors outside the handler (an after_request hook, an error handler):
        still the JSON error shape, never Quart's HTML page, and never re-raised in tests."""
        log.error("unhandled error outside the handler", exc_info=error,
                  extra={"fields": {"requestId": current_request_id(), "path": request.path}})
        response = error_response(InternalError("internal error"), current_request_id())
        return await self.finalize_request(response, from_error_handler=True)


def create_app(settings: Settings, *, system: ActorSystemLike, services: Services | None = None,
               blueprints: Sequence[ApiBlueprint] = (), health: HealthRegistry | None = None,
               dependencies: Dependencies | None = None, history: HistoryConfig | None = None,
               rate_limiter: RateLimiter | None = None, breakers: Breakers | None = None) -> VigilApp:
    """Build the app. ``system`` is a running ``kernel.ActorSystem`` (or anything with ``tree()`` and
    ``telemetry``); ``services`` are the domains' facades over it (``Application.services``): with
    them the user API is served, without them only the operators' endpoints; ``blueprints`` add
    routes; ``health`` may carry extra checks (the actor system and draining checks are added here);
    ``rate_limiter`` (the coordination limiter) enforces the settings' rate limits, which are off without it;
    ``breakers`` (the dependencies' ``kernel.Breakers``) show in /health and /metrics."""

    app = VigilApp(__name__, static_folder=None)
    app.config.update(
        # Quart enforces this on the streamed body, so an oversized chunked upload stops early;
        # Content-Length is checked before the handler runs, in _begin_request.
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        PROPAGATE_EXCEPTIONS=False,
    )
    warn_about_dev_defaults(settings, log)

    # A worker process's port serves only the operators' endpoints (health, metrics, supervision).
    serves_users = services is not None and settings.role != "worker"
    user_api = [users_api, health_api, read_side, outbox_ops, realtime_api, exports_api, sync_api, ai_api] if serves_users else []
    all_blueprints = [ops_blueprint(), ops_page_blueprint(), *user_api, *blueprints]
    routes = _collect_routes(all_blueprints)
    health = health if health is not None else HealthRegistry()
    draining = trio.Event()
    if "actors" not in health.names:
        health.add_check("actors", actor_system_check(system))
    if "server" not in health.names:
        health.add_check("server", draining_check(draining))
    if breakers is not None:  # the shared registry (run.py) has every dependency's, the AI provider's included
        health.add_breakers(breakers_health(breakers))
    elif services is not None:
        health.add_breakers(services.ai.breakers)

    openapi = build_openapi(routes, title=API_TITLE, version=API_VERSION)
    dependencies = dependencies if dependencies is not None else Dependencies()
    ingest = services.ingest if services is not None else None
    projection = services.projection if services is not None else None
    metrics = HttpMetrics(system, ingest=ingest, projection=projection, dependencies=dependencies,
                          maintenance=services.maintenance if services is not None else None, breakers=breakers,
                          ai=services.ai if services is not None else None)
    ops_history = OpsHistory(app_reader(system.tree, metrics.request_duration, ingest=ingest, projection=projection),
                             metrics.request_duration.bounds, history or HistoryConfig())
    app.extensions[EXTENSION_KEY] = AppContext(
        settings=settings, system=system, health=health, metrics=metrics, draining=draining,
        routes=routes, tokens=TokenVerifier(settings.jwt_secret),
        openapi_json=json.dumps(openapi, separators=(",", ":")).encode(), access=AccessLog(access_log),
        request_ids=RequestIds(), domains=services, history=ops_history, static=load_static(),
        dependencies=dependencies,
        limits=RateLimits(rate_limiter, RateLimitConfig(user_per_min=settings.rate_limit_user_per_min,
                                                        ip_per_min=settings.rate_limit_ip_per_min)))

    @app.while_serving
    async def _write_access_log() -> AsyncGenerator[None, None]:
        # The app's lifespan owns the writer: lines are batched only while it serves.
        writer = trio.CancelScope()

        async def write() -> None:
            with writer:
                await app_context(app).access.run()

        app.nursery.start_soon(write)
        sampler = trio.CancelScope()
        app.nursery.start_soon(_sample_history, ops_history, sampler)
        yield
        sampler.cancel()
        writer.cancel()  # its last batch is written as it stops, before the lifespan ends

    app.before_request(_begin_request)
    app.after_request(_finish_request)
    app.before_websocket(_begin_websocket)
    # One handler for everything: ApiError, werkzeug's routing/limit errors and bugs alike.
    app.register_error_handler(Exception, _handle_error)
    for bp in all_blueprints:
        bp.register(app)
    return app


async def _sample_history(history: OpsHistory, scope: trio.CancelScope) -> None:
    with scope:
        await history.run()


def _collect_routes(blueprints: Sequence[ApiBlueprint]) -> tuple[RouteSpec, ...]:
    seen: dict[tuple[str, str], str] = {}
    names: set[str] = set()
    routes: list[RouteSpec] = []
    for bp in blueprints:
        if bp.name in names:
            raise ValueError(f"two blueprints are named {bp.name!r}")
        names.add(bp.name)
        for spec in bp.routes:
            key = ("GET" if spec.websocket else spec.method, spec.path)
            if key in seen:
                raise ValueError(f"{key[0]} {key[1]} is registered twice ({seen[key]} and {spec.endpoint})")
            seen[key] = spec.endpoint
            routes.append(spec)
    return tuple(routes)


async def _begin_request() -> None:
    g.started_at = trio.current_time()
    current_request_id()
    limit = app_context().settings.max_body_bytes
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"request body is {length} bytes; the limit is {limit}", details={"maxBytes": limit})


async def _begin_websocket() -> None:
    current_request_id()


# Methods outside this set share one metrics label, so made-up methods cannot add series.
_METRIC_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


async def _finish_request(response: Any) -> Any:
    # Runs on every response: the request and g are looked up once, not through their proxies
    # at each use.
    req = request._get_current_object()  # type: ignore[attr-defined]
    state = g._get_current_object()
    rid = current_request_id()
    headers = response.headers
    headers["X-Request-ID"] = rid
    headers["Server-Time"] = server_time()
    if "rate_quota" in state:
        headers.update(quota_headers())
    context = app_context()
    now = trio.current_time()
    if context.draining.is_set() or not getattr(state, "body_read", False) and (
            req.content_length or "chunked" in req.headers.get("Transfer-Encoding", "")):
        # Answered before the body was read (401, 413, 415, ...), or shutting down: close the
        # connection, so a keep-alive client neither sends its next request into an unread body
        # nor holds the drain open.
        response.headers["Connection"] = "close"
    seconds = now - getattr(state, "started_at", now)
    rule = req.url_rule
    route = rule.rule if rule is not None else UNMATCHED_ROUTE
    method = req.method
    status = response.status_code
    context.metrics.observe(method if method in _METRIC_METHODS else "OTHER", route, status, seconds)
    context.access.add("request", {
        "method": method, "path": req.path, "route": route, "status": status,
        "durationMs": round(seconds * 1000, 3), "requestId": rid, "userId": getattr(state, "user_id", None)})
    return response


async def _handle_error(exc: Exception) -> Any:
    err = to_api_error(exc)
    if err.status >= 500 and not isinstance(exc, ApiError):
        # The client gets a request id, the log gets the stack: that is how the two meet.
        log.error("unhandled exception", exc_info=exc, extra={"fields": {
            "requestId": current_request_id(), "method": request.method if has_request_context() else "WEBSOCKET",
            "errorType": type(exc).__name__}})
    return error_response(err, current_request_id())


__all__ = ["VigilApp", "create_app", "app_context"]
