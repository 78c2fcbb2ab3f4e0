"""Health samples (API.md "Health samples: ingestion"): batch upserts and reads.

Handlers translate only. An upload goes to ``IngestService.accept_upload`` as raw bytes (the
domain decides when to spend the CPU on parsing it, and refuses a full lane before that); its
result is rendered here. Errors are the domains' and storage's, mapped to HTTP in ``_errors``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, StrictStr

from actors.ingest import RFC3339DateTime, UploadBody, UploadResult
from storage import HealthSample, SampleCursor

from ._context import domains, refuse_while_draining
from ._errors import ERROR_CODE_KEY
from ._routes import ApiBlueprint, ApiModel, Reply, current_request_id


class RejectionOut(ApiModel):
    index: int = Field(description="the sample's index in the request's samples")
    code: str = Field(description="UNKNOWN_METRIC, UNKNOWN_UNIT, NON_FINITE_VALUE, INVALID_TIME_RANGE, "
                                  "VALUE_OUT_OF_RANGE, METRIC_BLOCKED or SAMPLE_DELETED (its identity was "
                                  "deleted, possibly before it arrived: it stays deleted)")
    message: str


class BatchUpsertResult(ApiModel):
    request_id: str
    status: Literal["completed"]
    inserted: int
    updated: int
    deleted: int
    rejected: list[RejectionOut]


class SamplesQuery(ApiModel):
    metric: StrictStr | None = Field(default=None, max_length=64)
    from_: RFC3339DateTime | None = Field(default=None, alias="from")
    to: RFC3339DateTime | None = None
    limit: int = Field(default=100, ge=1, le=1000)
    cursor: StrictStr | None = Field(default=None, pattern=SampleCursor.PATTERN,
                                     description="nextCursor of the previous page",
                                     json_schema_extra={ERROR_CODE_KEY: "INVALID_CURSOR"})


class SampleOut(ApiModel):
    source_id: str
    source_record_id: str
    metric: str
    value: float
    unit: str
    start_at: datetime
    end_at: datetime
    metadata: dict[str, Any]
    updated_at: datetime


class SamplesPage(ApiModel):
    items: list[SampleOut]
    next_cursor: str | None


def _result_out(result: UploadResult) -> BatchUpsertResult:
    return BatchUpsertResult(request_id=result.request_id, status="completed", inserted=result.inserted,
                             updated=result.updated, deleted=result.deleted,
                             rejected=[RejectionOut(index=r.index, code=r.code, message=r.message)
                                       for r in result.rejected])


def _sample_out(s: HealthSample) -> SampleOut:
    return SampleOut(source_id=s.source_id, source_record_id=s.source_record_id, metric=s.metric, value=s.value,
                     unit=s.unit, start_at=s.start_at, end_at=s.end_at, metadata=s.metadata, updated_at=s.updated_at)


health = ApiBlueprint("health", url_prefix="/v1/health", tags=["health"])


@health.post("/samples/batch-upsert", body=UploadBody, response=BatchUpsertResult, raw_body=True,
             summary="Upsert (and on the change lane, delete) a batch of health samples",
             errors=[400, 403, 409, 413, 415, 422, 429, 503])
async def batch_upsert(*, user_id: str, raw: bytes) -> Any:
    refuse_while_draining()
    result = await domains().ingest.accept_upload(user_id, raw, correlation_id=current_request_id())
    if result.replayed:
        return Reply(_result_out(result), headers={"Idempotent-Replay": "true"})
    return _result_out(result)


@health.get("/samples", query=SamplesQuery, response=SamplesPage, summary="The user's samples, oldest first",
            errors=[503])
async def list_samples(*, user_id: str, query: SamplesQuery) -> SamplesPage:
    page = await domains().accounts.query_samples(user_id, metric=query.metric, start=query.from_, end=query.to,
                                                  cursor=query.cursor, limit=query.limit)
    return SamplesPage(items=[_sample_out(s) for s in page.items], next_cursor=page.next_cursor)


__all__ = ["BatchUpsertResult", "SamplesPage", "health"]
