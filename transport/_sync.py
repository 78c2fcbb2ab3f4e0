"""Sync (API.md "Sync"): push, pull and conflicts of the caller's device.

Handlers translate only: the device header is checked, ``SyncService`` called, its results rendered. Each push
operation is read by the domain one by one (a bad one is ``rejected``, the rest still applies), so the body is
validated here only as far as its envelope.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, StrictStr
from quart import request

from actors.realtime import DEVICE_ID
from actors.sync import OperationIn, PullResult, Resolved, entity_json
from storage import Conflict

from ._context import domains
from ._errors import ERROR_CODE_KEY, ValidationFailed
from ._routes import ApiBlueprint, ApiModel, current_request_id, validate_body

MAX_OPERATIONS = 500
DEVICE_HEADER = ("X-Device-ID", True, f"^{DEVICE_ID.pattern}$")
OPTIONAL_DEVICE_HEADER = ("X-Device-ID", False, f"^{DEVICE_ID.pattern}$")
_CONFLICT_ID = "<string(length=32):conflict_id>"


def device_id(*, required: bool = True) -> str | None:
    """``X-Device-ID`` (API.md: 1–128 chars of ``[A-Za-z0-9._:-]``); 400 when missing (if required) or bad."""
    value = request.headers.get("X-Device-ID")
    if value is None and not required:
        return None
    if value is None or DEVICE_ID.fullmatch(value) is None:
        raise ValidationFailed("X-Device-ID is required: 1-128 characters of [A-Za-z0-9._:-]", details=[
            {"in": "header", "path": "X-Device-ID", "problem": "missing" if value is None else "invalid"}])
    return value


_OPERATION_DOC = (
    "One operation: " + ", ".join(f"{name} ({'required' if f.is_required() else 'optional'})"
                                  for name, f in OperationIn.model_fields.items())
    + ". Each one is checked alone: a bad one comes back `rejected` and the rest of the push still applies.")


class PushBody(ApiModel):
    """The request as documented: each operation is an object checked on its own (see its description)."""

    operations: list[Annotated[dict[str, Any], Field(description=_OPERATION_DOC)]] = Field(
        max_length=MAX_OPERATIONS)


class EntityOut(ApiModel):
    entity_type: str
    entity_id: str
    version: int
    data: Any
    deleted: bool


class ResultOut(ApiModel):
    client_sync_operation_id: str | None
    status: Literal["applied", "merged", "conflict", "rejected"]
    entity: EntityOut | None
    conflict: dict[str, Any] | None
    error: dict[str, Any] | None


class PushOut(ApiModel):
    results: list[ResultOut]


class PullQuery(ApiModel):
    cursor: StrictStr | None = Field(default=None, max_length=128, pattern=r"^[A-Za-z0-9_-]+$",
                                     description="nextCursor of the previous pull (none: from the start)",
                                     json_schema_extra={ERROR_CODE_KEY: "INVALID_CURSOR"})
    limit: int = Field(default=500, ge=1, le=1000)


class ChangeOut(ApiModel):
    entity_type: str
    entity_id: str
    op: str
    version: int
    data: Any
    deleted: bool
    changed_at: datetime


class PullOut(ApiModel):
    changes: list[ChangeOut]
    next_cursor: str
    has_more: bool


class ConflictOut(ApiModel):
    id: str
    entity_type: str
    entity_id: str
    device_id: str | None
    server_version: int
    base_version: int | None
    server_data: Any
    client_data: Any
    status: str
    resolution: str | None
    resolved_data: Any
    created_at: datetime
    resolved_at: datetime | None


class ConflictsQuery(ApiModel):
    limit: int = Field(default=100, ge=1, le=1000)


class ConflictsOut(ApiModel):
    items: list[ConflictOut]


class ResolveBody(ApiModel):
    resolution: Literal["server", "client", "custom"]
    data: dict[str, Any] | None = None


class ResolvedOut(ApiModel):
    conflict: ConflictOut
    entity: EntityOut | None


def _conflict(c: Conflict) -> ConflictOut:
    return ConflictOut(id=c.id, entity_type=c.entity_type, entity_id=c.entity_id, device_id=c.device_id,
                       server_version=c.server_version, base_version=c.base_version, server_data=c.server_data,
                       client_data=c.client_data, status=c.status, resolution=c.resolution,
                       resolved_data=c.resolved_data, created_at=c.created_at, resolved_at=c.resolved_at)


def _pull_out(page: PullResult) -> PullOut:
    return PullOut(changes=[ChangeOut(entity_type=c.entity_type, entity_id=c.entity_id, op=c.op, version=c.version,
                                      data=c.data, deleted=c.deleted, changed_at=c.changed_at) for c in page.changes],
                   next_cursor=page.next_cursor, has_more=page.has_more)


def _resolved_out(done: Resolved) -> ResolvedOut:
    return ResolvedOut(conflict=_conflict(done.conflict),
                       entity=None if done.entity is None else EntityOut.model_validate(entity_json(done.entity)))


sync = ApiBlueprint("sync", url_prefix="/v1/sync", tags=["sync"])


@sync.post("/push", body=PushBody, raw_body=True, response=PushOut, errors=[400, 413, 429, 503],
           headers=[DEVICE_HEADER],
           summary="Apply the device's operations in order (X-Device-ID); one result per operation")
async def push(*, user_id: str, raw: bytes) -> Any:
    device = device_id()
    assert device is not None
    envelope: PushBody = validate_body(PushBody, raw)
    results = await domains().sync.push(user_id, device, envelope.operations, correlation_id=current_request_id())
    return {"results": list(results)}


@sync.get("/pull", query=PullQuery, response=PullOut, errors=[400, 503], headers=[DEVICE_HEADER],
          summary="The user's changes after the cursor (X-Device-ID), parents before children; acknowledges it")
async def pull(*, user_id: str, query: PullQuery) -> PullOut:
    device = device_id()
    assert device is not None
    return _pull_out(await domains().sync.pull(user_id, device, query.cursor, query.limit))


@sync.get("/conflicts", query=ConflictsQuery, response=ConflictsOut, errors=[503],
          headers=[OPTIONAL_DEVICE_HEADER],
          summary="The user's open conflicts (MANUAL policy), oldest first")
async def conflicts(*, user_id: str, query: ConflictsQuery) -> ConflictsOut:
    items = await domains().sync.conflicts(user_id, device_id(required=False), limit=query.limit)
    return ConflictsOut(items=[_conflict(c) for c in items])


@sync.post(f"/conflicts/{_CONFLICT_ID}/resolve", body=ResolveBody, response=ResolvedOut,
           errors=[400, 404, 409, 503], headers=[OPTIONAL_DEVICE_HEADER], summary="Resolve an open conflict: keep the server's, take the client's, "
           "or store custom data")
async def resolve(*, user_id: str, conflict_id: str, body: ResolveBody) -> ResolvedOut:
    done = await domains().sync.resolve(user_id, device_id(required=False), conflict_id, body.resolution, body.data,
                                        correlation_id=current_request_id())
    return _resolved_out(done)


__all__ = ["MAX_OPERATIONS", "device_id", "sync"]
