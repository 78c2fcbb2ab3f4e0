"""Exports (API.md "AI and exports"): request one, then read its status and, once completed, a presigned URL.

Handlers translate only: ``ExportsService`` called, its view rendered. Another user's export is a 404 like a
missing one; no object storage configured (or its breaker open) is 503 ``EXPORTS_UNAVAILABLE``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from actors.exports import ExportView

from ._context import domains
from ._routes import ApiBlueprint, ApiModel, Reply

EXPORT_ID = "<uuid:export_id>"


class ExportCreatedOut(ApiModel):
    export_id: str
    status: Literal["pending", "running", "completed", "failed"]


class ExportOut(ApiModel):
    export_id: str
    status: Literal["pending", "running", "completed", "failed"]
    url: str | None
    url_expires_at: datetime | None  # when the presigned url stops working
    error: str | None  # why it failed
    rows: int | None
    bytes: int | None
    created_at: datetime


def _export_out(view: ExportView) -> ExportOut:
    return ExportOut(export_id=view.export_id, status=view.status, url=view.url, url_expires_at=view.url_expires_at,
                     error=view.error, rows=view.rows, bytes=view.bytes, created_at=view.created_at)


exports = ApiBlueprint("exports", url_prefix="/v1/exports", tags=["exports"])


@exports.post("", response=ExportCreatedOut, status=202, errors=[503],
              summary="Export everything of the user (samples and sync entities) as gzip JSON lines")
async def create_export(*, user_id: str) -> Reply:
    view = await domains().exports.request(user_id)
    return Reply(ExportCreatedOut(export_id=view.export_id, status=view.status), status=202,
                 headers={"Location": f"/v1/exports/{view.export_id}"})


@exports.get(f"/{EXPORT_ID}", response=ExportOut, errors=[404, 503],
             summary="An export's status; once completed, a presigned URL (valid until urlExpiresAt)")
async def get_export(*, user_id: str, export_id: uuid.UUID) -> ExportOut:
    return _export_out(await domains().exports.get(user_id, str(export_id)))


__all__ = ["exports"]
