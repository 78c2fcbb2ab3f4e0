"""The read side (API.md "Health projections") and the outbox's operators' endpoints ("Operators").

Handlers translate only: query in, ``ProjectionService`` called, its view rendered with its freshness.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, StrictStr, WithJsonSchema

from actors.projection import (
    DeadLetterPage,
    Freshness,
    NightsView,
    ProductImpactView,
    ProjectionFigures,
    RollupsView,
    SessionImpactView,
    rollup_metrics,
)
from storage import DailyRollup, SleepNight

from ._context import domains
from ._errors import ERROR_CODE_KEY
from ._routes import ApiBlueprint, ApiModel
from ._types import ISODate

DEAD_LETTER_CURSOR = r"^[0-9]{1,19}\.[A-Za-z0-9._:-]{0,256}$"


def _rollup_metric(value: str) -> str:
    if value not in rollup_metrics():
        raise ValueError(f"no daily rollup for {value!r}; metrics with rollups: {sorted(rollup_metrics())}"
                         " (sleep_stage: GET /v1/health/sleep/nights)")
    return value


RollupMetric = Annotated[StrictStr, AfterValidator(_rollup_metric),
                         WithJsonSchema({"type": "string", "enum": sorted(rollup_metrics())})]


class FreshnessOut(ApiModel):
    status: Literal["fresh", "stale", "computing", "failed"]
    watermark: int
    projected_watermark: int


class RollupsQuery(ApiModel):
    metric: RollupMetric
    from_: ISODate = Field(alias="from")
    to: ISODate


class RollupOut(ApiModel):
    date: date
    metric: str
    unit: str
    count: int
    sum: float
    min: float
    max: float
    avg: float | None


class RollupsOut(ApiModel):
    items: list[RollupOut]
    freshness: FreshnessOut


class NightsQuery(ApiModel):
    from_: ISODate = Field(alias="from")
    to: ISODate


class NightOut(ApiModel):
    night: date
    start: datetime
    end: datetime
    asleep_minutes: float
    awake_minutes: float
    stages: dict[str, float]


class NightsOut(ApiModel):
    items: list[NightOut]
    freshness: FreshnessOut


class HeartRateOut(ApiModel):
    avg: float | None
    min: float | None
    max: float | None
    count: int


class SessionImpactOut(ApiModel):
    session_id: str
    status: str | None
    product_id: str | None
    before: HeartRateOut
    during: HeartRateOut
    after: HeartRateOut
    delta_during: float | None
    delta_after: float | None
    freshness: FreshnessOut


class ProductImpactOut(ApiModel):
    product_id: str
    sessions: int
    before: HeartRateOut
    during: HeartRateOut
    after: HeartRateOut
    delta_during: float | None
    delta_after: float | None


class ProductImpactsOut(ApiModel):
    items: list[ProductImpactOut]
    freshness: FreshnessOut


class DeadLettersQuery(ApiModel):
    cursor: StrictStr | None = Field(default=None, pattern=DEAD_LETTER_CURSOR, description="nextCursor of the "
                                     "previous page", json_schema_extra={ERROR_CODE_KEY: "INVALID_CURSOR"})
    limit: int = Field(default=100, ge=1, le=1000)


class DeadLetterOut(ApiModel):
    id: int
    type: str
    user_id: str
    handler: str | None
    attempts: int
    last_error: str | None
    created_at: datetime
    correlation_id: str | None


class DeadLettersOut(ApiModel):
    items: list[DeadLetterOut]
    next_cursor: str | None


class ReplayedOut(ApiModel):
    id: int
    status: Literal["replayed", "discarded"]


def _freshness(f: Freshness) -> FreshnessOut:
    return FreshnessOut(status=f.status, watermark=f.watermark, projected_watermark=f.projected_watermark)


def _rollup(r: DailyRollup) -> RollupOut:
    return RollupOut(date=r.local_date, metric=r.metric, unit=r.unit, count=r.count, sum=r.sum, min=r.min,
                     max=r.max, avg=r.avg)


def _night(n: SleepNight) -> NightOut:
    return NightOut(night=n.night_date, start=n.start_at, end=n.end_at, asleep_minutes=n.asleep_minutes,
                    awake_minutes=n.awake_minutes, stages=dict(n.stages))


def _rollups_out(view: RollupsView) -> RollupsOut:
    return RollupsOut(items=[_rollup(r) for r in view.items], freshness=_freshness(view.freshness))


def _nights_out(view: NightsView) -> NightsOut:
    return NightsOut(items=[_night(n) for n in view.items], freshness=_freshness(view.freshness))


_NO_DATA: dict[str, Any] = {"avg": None, "min": None, "max": None, "count": 0}


def _heart_rate(stats: Mapping[str, Any] | None, window: str) -> HeartRateOut:
    return HeartRateOut.model_validate((stats or {}).get(window, _NO_DATA))


def _session_impact_out(view: SessionImpactView) -> SessionImpactOut:
    impact = view.impact
    stats = impact.stats if impact is not None else None
    return SessionImpactOut(session_id=view.session_id, status=view.status, product_id=view.product_id,
                            before=_heart_rate(stats, "before"), during=_heart_rate(stats, "during"),
                            after=_heart_rate(stats, "after"),
                            delta_during=impact.delta_during if impact is not None else None,
                            delta_after=impact.delta_after if impact is not None else None,
                            freshness=_freshness(view.freshness))


def _product_impacts_out(view: ProductImpactView) -> ProductImpactsOut:
    return ProductImpactsOut(items=[ProductImpactOut(product_id=p.product_id, sessions=p.sessions,
                                                     before=_heart_rate(p.stats, "before"),
                                                     during=_heart_rate(p.stats, "during"),
                                                     after=_heart_rate(p.stats, "after"),
                                                     delta_during=p.delta_during, delta_after=p.delta_after)
                                    for p in view.items],
                             freshness=_freshness(view.freshness))


def _dead_letters_out(page: DeadLetterPage) -> DeadLettersOut:
    return DeadLettersOut(items=[DeadLetterOut(id=d.event_id, type=d.type, user_id=d.user_id, handler=d.handler,
                                               attempts=d.attempts, last_error=d.last_error, created_at=d.created_at,
                                               correlation_id=d.correlation_id) for d in page.items],
                          next_cursor=page.next_cursor)


def figures_to_dict(figures: ProjectionFigures) -> dict[str, Any]:
    """The outbox and handler lag for ``/v1/ops/supervision`` (the same figures /metrics shows)."""
    outbox = figures.outbox
    return {
        "figuresAgeSeconds": figures.age,
        "outbox": None if outbox is None else {
            "pending": outbox.pending, "processing": outbox.processing, "completed": outbox.completed,
            "dead": outbox.dead, "oldestPendingAgeSeconds": outbox.oldest_pending_age_seconds},
        "handlers": [{"handler": lag.handler, "pending": lag.pending, "processing": lag.processing,
                      "failed": lag.failed, "dead": lag.dead,
                      "lagEvents": lag.pending + lag.processing + lag.failed,
                      "lagSeconds": lag.oldest_age_seconds or 0.0,
                      "breaker": figures.breakers.get(lag.handler)} for lag in figures.lag],
        "breakers": dict(figures.breakers),
    }


read_side = ApiBlueprint("projections", url_prefix="/v1/health", tags=["health"])


@read_side.get("/rollups/daily", query=RollupsQuery, response=RollupsOut, errors=[503],
               summary="Daily rollups of one metric in the user's timezone, with their freshness")
async def daily_rollups(*, user_id: str, query: RollupsQuery) -> RollupsOut:
    return _rollups_out(await domains().projection.daily_rollups(user_id, query.metric, query.from_, query.to))


@read_side.get("/sleep/nights", query=NightsQuery, response=NightsOut, errors=[503],
               summary="Sleep nights in the user's timezone, with their freshness")
async def sleep_nights(*, user_id: str, query: NightsQuery) -> NightsOut:
    return _nights_out(await domains().projection.sleep_nights(user_id, query.from_, query.to))


@read_side.get("/session-impact/<session_id>", response=SessionImpactOut, errors=[400, 404, 503],
               summary="Heart rate the hour before, during and the hour after one of the user's consumption sessions")
async def session_impact(*, user_id: str, session_id: str) -> SessionImpactOut:
    return _session_impact_out(await domains().projection.session_impact(user_id, session_id))


@read_side.get("/product-impact", response=ProductImpactsOut, errors=[503],
               summary="Session impact per product, averaged over the product's ended sessions")
async def product_impact(*, user_id: str) -> ProductImpactsOut:
    return _product_impacts_out(await domains().projection.product_impact(user_id))


outbox_ops = ApiBlueprint("outbox", url_prefix="/v1/ops/outbox", tags=["operators"])
_EVENT_ID = "<int(min=1, max=9223372036854775807):event_id>"


def _cursor(text: str | None) -> tuple[int, str] | None:
    if text is None:
        return None
    event_id, _, handler = text.partition(".")
    return int(event_id), handler


@outbox_ops.get("/dead-letters", auth="ops", query=DeadLettersQuery, response=DeadLettersOut, errors=[503],
                summary="Dead letters: outbox work that gave up (per event and handler), oldest first")
async def dead_letters(*, query: DeadLettersQuery) -> DeadLettersOut:
    page = await domains().projection.dead_letters(cursor=_cursor(query.cursor), limit=query.limit)
    return _dead_letters_out(page)


@outbox_ops.post(f"/{_EVENT_ID}/replay", auth="ops", response=ReplayedOut, errors=[404, 503],
                 summary="Run an event's dead letters again (fresh attempts)")
async def replay(*, event_id: int) -> Any:
    await domains().projection.replay(event_id)
    return ReplayedOut(id=event_id, status="replayed")


@outbox_ops.delete(f"/{_EVENT_ID}", auth="ops", response=ReplayedOut, errors=[404, 503],
                   summary="Discard an event's dead letters (they are not retried)")
async def discard(*, event_id: int) -> Any:
    await domains().projection.discard(event_id)
    return ReplayedOut(id=event_id, status="discarded")


__all__ = ["figures_to_dict", "outbox_ops", "read_side"]
