"""The operator page (API.md "Operators": ``GET /ops``) and the figures its charts draw
(``GET /v1/ops/summary``).

The page is static HTML, CSS and plain JavaScript shipped inside the package (``transport/static``, read
with importlib.resources, so a wheel or a frozen binary serves it too). It asks for the operator token,
keeps it in sessionStorage, and reads everything through the ops endpoints and the telemetry WebSocket.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import trio
from pydantic import ConfigDict, Field
from quart import current_app

from ._context import app_context
from ._errors import NotFound
from ._routes import ApiBlueprint, ApiModel

# Name -> content type; nothing else under static/ is served.
ASSETS = {"ops.js": "text/javascript; charset=utf-8", "ops.css": "text/css; charset=utf-8"}
PAGE = "ops.html"
# Only the page's own files and connections (the WebSocket included): no inline script, no third party.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def load_static() -> dict[str, bytes]:
    """The page and its assets, read once from the installed package."""
    root = resources.files("transport").joinpath("static")
    return {name: root.joinpath(name).read_bytes() for name in (PAGE, *ASSETS)}


class SummaryQuery(ApiModel):
    since: float | None = Field(default=None, description="only points after this instant (the `at` of the "
                                                          "last point seen; the server's monotonic clock)")


class ChartPoint(ApiModel):
    model_config = ConfigDict(extra="allow")
    at: float
    request_rate: float
    error_ratio: float
    p99_ms: float | None
    restarts: int
    lanes: dict[str, int]
    outbox_pending: int | None
    outbox_oldest_seconds: float | None
    projection_lag: int | None
    dead_letters: int | None


class LaneOut(ApiModel):
    lane: str
    depth: int
    capacity: int
    drain_per_second: float


class PoolOut(ApiModel):
    in_use: int
    open: int
    max_size: int


class SummaryOut(ApiModel):
    at: float
    interval_seconds: float
    points: list[ChartPoint]
    lanes: list[LaneOut]
    pool: PoolOut | None


def summary_dict(since: float | None) -> dict[str, Any]:
    context = app_context()
    history = context.history
    points = history.points(since)
    lanes = []
    if context.domains is not None:
        lanes = [{"lane": s.lane, "depth": s.depth, "capacity": s.capacity, "drainPerSecond": s.drain_per_second}
                 for s in context.domains.ingest.lane_stats()]
    pool_stats = context.dependencies.pool_stats
    pool = None
    if pool_stats is not None:
        stats = pool_stats()
        pool = {"inUse": stats.in_use, "open": stats.open, "maxSize": stats.max_size}
    return {"at": trio.current_time(), "intervalSeconds": history.config.interval,
            "points": points, "lanes": lanes, "pool": pool}


def ops_page_blueprint() -> ApiBlueprint:
    page = ApiBlueprint("ops_page", tags=["operators"])

    def static(name: str, content_type: str) -> Any:
        body = app_context().static[name]
        return current_app.response_class(body, content_type=content_type, headers=PAGE_HEADERS)

    @page.get("/ops", auth="none", media_type="text/html",
              summary="The operator dashboard (HTML): it asks for the operator token and updates live")
    async def dashboard() -> Any:
        return static(PAGE, "text/html; charset=utf-8")

    @page.get("/ops/assets/<string:name>", auth="none", media_type="text/plain", errors=[404],
              summary="The dashboard's script and stylesheet")
    async def asset(*, name: str) -> Any:
        content_type = ASSETS.get(name)
        if content_type is None:
            raise NotFound(f"no asset {name!r}")
        return static(name, content_type)

    @page.get("/v1/ops/summary", auth="ops", query=SummaryQuery, response=SummaryOut,
              summary="The last minutes of request rate and p99, restarts, lane depths and outbox lag (one point "
                      "per interval), the lanes and the database pool now")
    async def summary(*, query: SummaryQuery) -> Any:
        return summary_dict(query.since)

    return page


__all__ = ["ASSETS", "PAGE", "PAGE_HEADERS", "load_static", "ops_page_blueprint"]
