"""User settings and health-sample ingestion (API.md "User settings", "Health samples: ingestion").

Handlers only translate: HTTP in, a message to an actor, the actor's answer out. An upload is validated
(pydantic), hash-checked and its samples judged and store-checked before it queues for its lane
(``decoding_upload``): in this process for foreground lanes, in a low-priority worker process for
backfill when the app has a CPU pool. The lane judges blocked metrics, which need the user's settings.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterator, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Literal, overload
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AwareDatetime, Field, field_validator, model_validator

from actors.ingest import (
    REGISTRY,
    DeletionInput,
    IngestBatch,
    IngestService,
    IngestUnavailable,
    LaneFull,
    PreparesSamples,
    parse_body,
    payload_hash_parsed,
    payload_hash_raw,
    preparing_upload,
    run_steps,
    run_steps_async,
)
from actors.ingest._account import GetSettings, PutSettings, QuerySamples
from kernel import ActorSystem
from storage import HealthSample, InvalidData, SampleCursor, UserSettings

from ._cpu_pool import CpuPoolBroken
from ._errors import (
    Conflict,
    Forbidden,
    PayloadTooLarge,
    RateLimited,
    Unavailable,
    Unprocessable,
    ValidationFailed,
)
from ._routes import ApiBlueprint, ApiModel, Reply, validate_body, validate_parsed
from ._services import get_services

MAX_ITEMS = 5_000
_ID = r"^[A-Za-z0-9._:-]{1,128}$"


# -- models -----------------------------------------------------------------------------------------
class SettingsBody(ApiModel):
    allow_health_data_upload: bool = True
    blocked_metrics: list[str] = Field(default_factory=list, max_length=64)
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {value!r}") from None
        return value

    @field_validator("blocked_metrics")
    @classmethod
    def _known_metrics(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(REGISTRY))
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; known: {sorted(REGISTRY)}")
        return sorted(set(value))


class SampleBody(ApiModel):
    source_id: str = Field(min_length=1, max_length=256)
    source_record_id: str = Field(min_length=1, max_length=256)
    metric: str = Field(min_length=1, max_length=64)
    value: float | None  # null / non-finite: rejected per sample, not per request
    unit: str = Field(min_length=1, max_length=32)
    start_at: AwareDatetime
    end_at: AwareDatetime
    metadata: dict[str, Any] = Field(default_factory=dict)


class DeletionBody(ApiModel):
    source_id: str = Field(min_length=1, max_length=256)
    source_record_id: str = Field(min_length=1, max_length=256)
    start_at: AwareDatetime


class BatchUpsertBody(ApiModel):
    request_id: str = Field(pattern=_ID)
    payload_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    lane: Literal["hot", "cold", "change"]
    samples: list[SampleBody] = Field(default_factory=list)
    deletions: list[DeletionBody] = Field(default_factory=list)

    @model_validator(mode="after")
    def _deletions_on_change_lane(self) -> BatchUpsertBody:
        if self.deletions and self.lane != "change":
            raise ValueError("deletions are accepted on the change lane only")
        return self


class RejectionOut(ApiModel):
    index: int
    code: str
    message: str


class BatchUpsertResult(ApiModel):
    request_id: str
    status: Literal["completed"]
    inserted: int
    updated: int
    deleted: int
    rejected: list[RejectionOut]


class SamplesQuery(ApiModel):
    metric: str | None = Field(default=None, max_length=64)
    from_: AwareDatetime | None = Field(default=None, alias="from")
    to: AwareDatetime | None = None
    limit: int = Field(default=100, ge=1, le=1000)
    cursor: str | None = Field(default=None, max_length=200)


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


# -- helpers ----------------------------------------------------------------------------------------
def _system() -> ActorSystem:
    system = get_services().system
    assert isinstance(system, ActorSystem)
    return system


def _account(user_id: str) -> Any:
    return _system().ref("root/accounts").key(user_id)


def _settings_out(settings: UserSettings) -> SettingsBody:
    return SettingsBody(allow_health_data_upload=settings.allow_health_data_upload,
                        blocked_metrics=list(settings.blocked_metrics), timezone=settings.timezone)


def _refuse_while_draining() -> None:
    if get_services().draining.is_set():
        raise Unavailable("the server is shutting down; retry on another instance", code="SHUTTING_DOWN")


# -- routes -----------------------------------------------------------------------------------------
users = ApiBlueprint("users", url_prefix="/v1/users", tags=["settings"])
health = ApiBlueprint("health", url_prefix="/v1/health", tags=["health"])


class Me(ApiModel):
    user_id: str


@users.get("/me", response=Me, summary="Who the bearer token says you are")
async def whoami(*, user_id: str) -> Me:
    return Me(user_id=user_id)


@users.get("/me/settings", response=SettingsBody, summary="The user's privacy and locale settings")
async def get_settings(*, user_id: str) -> SettingsBody:
    return _settings_out(await _account(user_id).ask(GetSettings()))


@users.put("/me/settings", body=SettingsBody, response=SettingsBody, summary="Replace the user's settings")
async def put_settings(*, user_id: str, body: SettingsBody) -> SettingsBody:
    _refuse_while_draining()
    stored = await _account(user_id).ask(PutSettings(settings=UserSettings(
        allow_health_data_upload=body.allow_health_data_upload,
        blocked_metrics=tuple(body.blocked_metrics),
        timezone=body.timezone,
    )))
    return _settings_out(stored)


_LANE_MEMBER = re.compile(rb'"lane"\s*:\s*"(hot|cold|change)"')


def _named_lane(raw: bytes) -> str | None:
    """The lane a raw body names, before parsing; None when absent or ambiguous (a "lane" key in
    metadata too) — validation then decides, and the request is treated as background."""
    found = _LANE_MEMBER.findall(raw)
    return found[0].decode() if len(found) == 1 else None


def _lane_full(full: LaneFull) -> RateLimited:
    return RateLimited(f"the {full.lane} lane is full; retry later", code="LANE_BACKPRESSURE",
                       retry_after_ms=full.retry_after_ms, details={"lane": full.lane})


@health.post("/samples/batch-upsert", body=BatchUpsertBody, response=BatchUpsertResult, raw_body=True,
             summary="Upsert (and on the change lane, delete) a batch of health samples",
             errors=[400, 403, 409, 413, 415, 422, 429, 503])
async def batch_upsert(*, user_id: str, raw: bytes) -> Any:
    _refuse_while_draining()
    services = get_services()
    service: IngestService = services.resource("ingest")
    pool = services.cpu_pool
    lane = _named_lane(raw)
    if lane is not None:
        try:
            # A request that would be refused anyway should not first cost its parsing.
            service.refuse_if_full(_system(), lane)
        except LaneFull as full:
            raise _lane_full(full) from None
    if lane is not None and not service.is_background(lane):
        # Foreground uploads are small and people wait on them: decoded here, at once.
        with service.priority.foreground():
            return await _ingest(service, await _decode_here(user_id, raw, service))
    if pool is None:
        # Backfill parses one request at a time, and only when the foreground lanes are quiet:
        # here, parsing holds the GIL that every lane's transaction needs too.
        async with service.priority.background_cpu():
            batch = await _decode_here(user_id, raw, service)
    else:
        # In low-priority worker processes, several at once, each still in its turn.
        try:
            batch = await pool.run(decode_upload, user_id, raw, service.store.preparer,
                                   wait_turn=service.priority.background_turn)
        except CpuPoolBroken:
            raise Unavailable("decoding this upload failed on the server's side; retry") from None
        batch = replace(batch, samples=UploadSamples(raw))
    return await _ingest(service, batch)


def decoding_upload(user_id: str, raw: bytes, preparer: PreparesSamples) -> Generator[None, None, IngestBatch]:
    """Validate the body, check its payloadHash, judge and store-check its samples: the lane's
    message, ready to commit. Yields between its steps (each under a millisecond for 500 samples),
    so an async driver can let other tasks run in between; raises the ApiError (or the store's
    InvalidData) the request is answered with."""
    # Parsed once for both validation and the hash; what orjson refuses (malformed JSON, NaN, ...)
    # takes the stdlib path, which answers it as before.
    document = parse_body(raw)
    yield
    body: BatchUpsertBody = (validate_body(BatchUpsertBody, raw) if document is None
                             else validate_parsed(BatchUpsertBody, document, raw))
    yield
    count = len(body.samples) + len(body.deletions)
    if count > MAX_ITEMS:
        raise PayloadTooLarge(f"{count} samples + deletions; at most {MAX_ITEMS} per request",
                              details={"maxItems": MAX_ITEMS})
    try:
        expected = payload_hash_raw(raw) if document is None else payload_hash_parsed(document, raw)
    except ValueError as exc:
        raise ValidationFailed(str(exc)) from None
    if expected != body.payload_hash:
        raise Unprocessable("payloadHash does not match the body (SHA-256 of its RFC 8785 form without payloadHash)",
                            code="PAYLOAD_HASH_MISMATCH")
    yield
    prepared = yield from preparing_upload(body.samples, preparer)
    return IngestBatch(
        user_id=user_id,
        request_id=body.request_id,
        payload_hash=body.payload_hash,
        lane=body.lane,
        # The validated models satisfy the lane's SampleLike/DeletionLike as they are: no copy per sample.
        samples=tuple(body.samples),
        deletions=tuple(body.deletions),
        prepared=prepared,
    )


def decode_upload(user_id: str, raw: bytes, preparer: PreparesSamples) -> IngestBatch:
    """:func:`decoding_upload` in one go, as a worker process runs it. What it returns crosses
    back pickled, so it carries the prepared rows and plain deletions but not the sample models
    (the caller attaches :class:`UploadSamples` instead)."""
    batch = run_steps(decoding_upload(user_id, raw, preparer))
    deletions = tuple(DeletionInput(source_id=d.source_id, source_record_id=d.source_record_id, start_at=d.start_at)
                      for d in batch.deletions)
    return replace(batch, samples=(), deletions=deletions)


class UploadSamples(Sequence[SampleBody]):
    """The samples of an upload already validated (in a worker), parsed again here only if asked
    for: the lane needs them only to prepare an upload again for a user's blocked metrics."""

    __slots__ = ("_raw", "_samples")

    def __init__(self, raw: bytes) -> None:
        self._raw = raw
        self._samples: tuple[SampleBody, ...] | None = None

    def _loaded(self) -> tuple[SampleBody, ...]:
        if self._samples is None:
            self._samples = tuple(validate_body(BatchUpsertBody, self._raw).samples)
        return self._samples

    def __len__(self) -> int:
        return len(self._loaded())

    @overload
    def __getitem__(self, index: int) -> SampleBody: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[SampleBody]: ...
    def __getitem__(self, index: int | slice) -> SampleBody | Sequence[SampleBody]:
        return self._loaded()[index]

    def __iter__(self) -> Iterator[SampleBody]:
        return iter(self._loaded())


async def _decode_here(user_id: str, raw: bytes, service: IngestService) -> IngestBatch:
    """:func:`decoding_upload` in this process, with checkpoints between the steps: the lanes'
    transactions, which resume on this thread, go on in between."""
    return await run_steps_async(decoding_upload(user_id, raw, service.store.preparer))


async def _ingest(service: IngestService, batch: IngestBatch) -> Any:
    try:
        outcome = await service.submit(_system(), batch)
    except LaneFull as full:
        raise _lane_full(full) from None
    except IngestUnavailable:
        raise Unavailable("ingestion is not available right now; retry later") from None
    match outcome.kind:
        case "completed":
            return outcome.result
        case "replay":
            return Reply(outcome.result, headers={"Idempotent-Replay": "true"})
        case "in_progress":
            raise Conflict("a request with this requestId is still being processed", code="REQUEST_IN_PROGRESS",
                           retryable=True, retry_after_ms=1000)
        case "hash_mismatch":
            raise Unprocessable(outcome.detail or "this requestId was used with a different payload",
                                code="PAYLOAD_HASH_MISMATCH")
        case "upload_disabled":
            raise Forbidden("health data upload is disabled in your settings", code="HEALTH_UPLOAD_DISABLED")
    raise AssertionError(f"unhandled ingest outcome {outcome.kind}")


@health.get("/samples", query=SamplesQuery, response=SamplesPage, summary="The user's samples, oldest first")
async def list_samples(*, user_id: str, query: SamplesQuery) -> SamplesPage:
    after = None
    if query.cursor is not None:
        try:
            after = SampleCursor.decode(query.cursor)
        except InvalidData:
            raise ValidationFailed("cursor is not one this API issued", code="INVALID_CURSOR",
                                   details=[{"field": "cursor", "problem": "malformed"}]) from None
    page = await _account(user_id).ask(QuerySamples(metric=query.metric, start=query.from_, end=query.to,
                                                    after=after, limit=query.limit))
    return SamplesPage(items=[_sample_out(s) for s in page.items],
                       next_cursor=page.next_cursor.encode() if page.next_cursor is not None else None)


def _sample_out(s: HealthSample) -> SampleOut:
    return SampleOut(source_id=s.source_id, source_record_id=s.source_record_id, metric=s.metric, value=s.value,
                     unit=s.unit, start_at=s.start_at, end_at=s.end_at, metadata=s.metadata, updated_at=s.updated_at)


