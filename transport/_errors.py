"""One error hierarchy, and the one place where any exception becomes an HTTP response.

Handlers raise ``ApiError`` subclasses (or let anything else escape); ``to_api_error`` maps every
exception — routing errors, body limits, kernel errors, bugs — to an ``ApiError``, and
``error_response`` renders it in the API.md shape:
``{"error": {"code", "message", "retryable", "retryAfterMs", "requestId", "details"}}``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError
from quart import Response, current_app
from werkzeug.exceptions import HTTPException
from werkzeug.routing import WebsocketMismatch

from actors.accounts import AccountsError, InvalidCursor, InvalidSettings
from actors.ai import AiError, AiUnavailable
from actors.exports import ExportsError, ExportsUnavailable, UnknownExport
from actors.ingest import (
    IngestError,
    IngestUnavailable,
    InvalidUpload,
    LaneFull,
    PayloadHashMismatch,
    RequestInProgress,
    TooManyItems,
    UploadDisabled,
)
from actors.projection import NoRollup, NoSession, ProjectionError, UnknownDeadLetter
from actors.sync import (
    ConflictResolved,
    InvalidResolution,
    InvalidSyncCursor,
    SyncBusy,
    SyncError,
    UnknownConflict,
)
from kernel import ActorCrashed, ActorStopped, AskTimeout, MailboxFull, NoSuchActor
from storage import InvalidData, StoreCircuitOpen, StoreError, StoreUnavailable

log = logging.getLogger("vigil.transport")


class ApiError(Exception):
    """An error with a place in the HTTP contract. Subclasses fix ``status`` and a default ``code``;
    a specific code is passed at the raise site: ``RateLimited("lane full", code="LANE_BACKPRESSURE")``."""

    status: int = 500  # a class default; an instance may carry an odd werkzeug status
    code: str = "INTERNAL"
    retryable: bool = False
    default_retry_after_ms: ClassVar[int | None] = None

    def __init__(self, message: str, *, code: str | None = None, details: Any = None,
                 retryable: bool | None = None, retry_after_ms: int | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            if not code or not code.replace("_", "").isalnum() or code.upper() != code:
                raise ValueError(f"error codes are UPPER_SNAKE, got {code!r}")
            self.code = code
        if retryable is not None:
            self.retryable = retryable
        self.details = details
        self.retry_after_ms = retry_after_ms if retry_after_ms is not None else self.default_retry_after_ms
        self.headers: dict[str, str] = dict(headers or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status}, {self.code}, {self.message!r})"


class ValidationFailed(ApiError):
    status = 400
    code = "VALIDATION_ERROR"


class Unauthenticated(ApiError):
    status = 401
    code = "UNAUTHENTICATED"

    def __init__(self, message: str = "a valid bearer token is required", **kw: Any) -> None:
        super().__init__(message, **kw)
        self.headers.setdefault("WWW-Authenticate", 'Bearer realm="vigil"')


class Forbidden(ApiError):
    status = 403
    code = "FORBIDDEN"


class NotFound(ApiError):
    status = 404
    code = "NOT_FOUND"


class MethodNotAllowedError(ApiError):
    status = 405
    code = "METHOD_NOT_ALLOWED"


class Conflict(ApiError):
    status = 409
    code = "CONFLICT"


class PayloadTooLarge(ApiError):
    status = 413
    code = "PAYLOAD_TOO_LARGE"


class UnsupportedMediaType(ApiError):
    status = 415
    code = "UNSUPPORTED_MEDIA_TYPE"


class Unprocessable(ApiError):
    """422 always carries a specific code, e.g. ``PAYLOAD_HASH_MISMATCH``."""

    status = 422
    code = "UNPROCESSABLE"


class UpgradeRequired(ApiError):
    status = 426
    code = "UPGRADE_REQUIRED"


class RateLimited(ApiError):
    status = 429
    code = "RATE_LIMITED"
    retryable = True
    default_retry_after_ms = 1000


class InternalError(ApiError):
    status = 500
    code = "INTERNAL"


class Unavailable(ApiError):
    status = 503
    code = "UNAVAILABLE"
    retryable = True
    default_retry_after_ms = 1000


# -- the response models (for the OpenAPI document) -------------------------------------------------
class ErrorBody(BaseModel):
    model_config = ConfigDict(title="ErrorBody")
    code: str
    message: str
    retryable: bool
    retryAfterMs: int | None
    requestId: str
    details: Any = None


class ErrorResponse(BaseModel):
    model_config = ConfigDict(title="ErrorResponse")
    error: ErrorBody


# -- the mapping ------------------------------------------------------------------------------------
def validation_details(exc: ValidationError, *, location: str) -> list[dict[str, str]]:
    """Each field path and problem; never the offending input (it may be a health sample)."""
    out = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False):
        out.append({"in": location, "path": ".".join(str(p) for p in err["loc"]),
                    "problem": err["msg"], "type": err["type"]})
    return out


ERROR_CODE_KEY = "x-error-code"
"""A field's ``json_schema_extra`` key naming the code its bad values get (default VALIDATION_ERROR),
e.g. ``Field(pattern=..., json_schema_extra={ERROR_CODE_KEY: "INVALID_CURSOR"})``: the OpenAPI document
then says it too."""


def _field_code(model: type[BaseModel] | None, details: list[dict[str, str]]) -> str | None:
    """The one code every failing field of ``model`` declares, if they all declare the same."""
    if model is None or not details:
        return None
    by_alias = {f.alias or name: f for name, f in model.model_fields.items()}
    codes = set()
    for detail in details:
        field = by_alias.get(detail["path"].split(".")[0])
        extra = field.json_schema_extra if field is not None else None
        codes.add(extra.get(ERROR_CODE_KEY) if isinstance(extra, dict) else None)
    (code,) = codes if len(codes) == 1 else (None,)
    return code if isinstance(code, str) else None


def request_validation_error(exc: ValidationError, *, location: str,
                             model: type[BaseModel] | None = None) -> ValidationFailed:
    details = validation_details(exc, location=location)
    if any(d["type"] == "json_invalid" for d in details):
        return ValidationFailed("request body is not valid JSON", code="VALIDATION_ERROR",
                                details=[{"in": location, "path": "", "problem": d["problem"],
                                          "type": "json_invalid"} for d in details if d["type"] == "json_invalid"])
    return ValidationFailed(f"the request {location} is invalid", code=_field_code(model, details), details=details)


def _http_exception_code(exc: HTTPException) -> str:
    name = (exc.name or "error").upper()
    return "".join(ch if ch.isalnum() else "_" for ch in name).strip("_") or "ERROR"


def to_api_error(exc: BaseException) -> ApiError:
    """Every exception that reaches the HTTP layer, as an ApiError. Unknown ones become INTERNAL
    (the caller logs them); the client never sees their message or stack."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, WebsocketMismatch):  # a plain HTTP request to a WebSocket route (or back)
        upgrade = UpgradeRequired("this endpoint is a WebSocket; connect with an Upgrade request")
        upgrade.headers["Upgrade"] = "websocket"
        return upgrade
    if isinstance(exc, HTTPException):
        status = exc.code or 500
        if status == 404:
            return NotFound("no such resource")
        if status == 405:
            allowed: Sequence[str] = sorted(getattr(exc, "valid_methods", None) or [])
            not_allowed = MethodNotAllowedError("method not allowed for this resource",
                                                details={"allowed": list(allowed)})
            if allowed:
                not_allowed.headers["Allow"] = ", ".join(allowed)
            return not_allowed
        if status == 413:
            return PayloadTooLarge("request body is too large")
        if status == 415:
            return UnsupportedMediaType("unsupported content type")
        if status == 400:
            return ValidationFailed("bad request")
        if status >= 500:
            return InternalError("internal error")
        err = ApiError(exc.description or exc.name or "error", code=_http_exception_code(exc))
        err.status = status
        return err
    if isinstance(exc, IngestError | AccountsError | ProjectionError):
        return _domain_error(exc)
    if isinstance(exc, ExportsError):
        return _exports_error(exc)
    if isinstance(exc, SyncError):
        return _sync_error(exc)
    if isinstance(exc, AiError):
        return _ai_error(exc)
    kernel = _kernel_error(exc)
    if kernel is not None:
        return kernel
    stored = _storage_error(exc)
    if stored is not None:
        return stored
    return InternalError("internal error")


def _domain_error(exc: IngestError | AccountsError | ProjectionError) -> ApiError:
    """The domains' errors, each with its place in API.md."""
    match exc:
        case InvalidUpload():
            return ValidationFailed(exc.message, details=[
                {"in": "body", "path": p.path, "problem": p.problem, "type": p.kind} for p in exc.problems])
        case TooManyItems():
            return PayloadTooLarge(exc.message, details={"maxItems": exc.limit})
        case PayloadHashMismatch():
            return Unprocessable(exc.message, code="PAYLOAD_HASH_MISMATCH")
        case UploadDisabled():
            return Forbidden(exc.message, code="HEALTH_UPLOAD_DISABLED")
        case RequestInProgress():
            return Conflict(exc.message, code="REQUEST_IN_PROGRESS", retryable=True, retry_after_ms=1000)
        case LaneFull():
            return RateLimited(exc.message, code="LANE_BACKPRESSURE", retry_after_ms=exc.retry_after_ms,
                               details={"lane": exc.lane})
        case IngestUnavailable():
            return Unavailable(exc.message)
        case InvalidCursor():
            return ValidationFailed(str(exc), code="INVALID_CURSOR",
                                    details=[{"field": "cursor", "problem": "malformed"}])
        case InvalidSettings():
            return ValidationFailed("the request body is invalid", details=[
                {"in": "body", "path": field, "problem": problem} for field, problem in exc.problems.items()])
        case NoRollup():
            return ValidationFailed(str(exc), details=[{"in": "query", "path": "metric", "problem": str(exc)}])
        case UnknownDeadLetter() | NoSession():
            return NotFound(str(exc))
    return InternalError("internal error")


def _exports_error(exc: ExportsError) -> ApiError:
    match exc:
        case ExportsUnavailable():
            retry_ms = max(1000, round(exc.retry_after * 1000)) if exc.retry_after else None
            return Unavailable(str(exc), code="EXPORTS_UNAVAILABLE", retry_after_ms=retry_ms)
        case UnknownExport():
            return NotFound(str(exc))
    return InternalError("internal error")


def _sync_error(exc: SyncError) -> ApiError:
    match exc:
        case SyncBusy():
            return RateLimited(str(exc), code="SYNC_BUSY", retry_after_ms=exc.retry_after_ms)
        case InvalidSyncCursor():
            return ValidationFailed(str(exc), code="INVALID_CURSOR",
                                    details=[{"in": "query", "path": "cursor", "problem": exc.reason}])
        case UnknownConflict():
            return NotFound(str(exc))
        case ConflictResolved():
            return Conflict(str(exc), code="CONFLICT_ALREADY_RESOLVED")
        case InvalidResolution():
            return ValidationFailed(str(exc), details=[{"in": "body", **p} for p in exc.problems])
    return InternalError("internal error")


def _ai_error(exc: AiError) -> ApiError:
    if isinstance(exc, AiUnavailable):
        return Unavailable(exc.message, code="AI_UNAVAILABLE", retry_after_ms=max(1, math.ceil(exc.retry_after * 1000)),
                           details={"reason": exc.reason})
    return InternalError("internal error")


def _kernel_error(exc: BaseException) -> ApiError | None:
    """The kernel's errors that escape a handler are about capacity or availability, not bugs.
    (A route that knows better — e.g. a full ingest lane — raises its own specific ApiError.)"""
    if isinstance(exc, MailboxFull):
        return RateLimited("the server is busy; retry later")
    if isinstance(exc, AskTimeout):
        return Unavailable("the server did not answer in time; retry later")
    if isinstance(exc, ActorStopped | NoSuchActor):
        return Unavailable("a required component is not running")
    if isinstance(exc, ActorCrashed) and exc.__cause__ is not None:
        # The actor crashed on this request: judge by what made it crash.
        cause = _storage_error(exc.__cause__)
        return cause if cause is not None else InternalError("internal error")
    return None


def _storage_error(exc: BaseException) -> ApiError | None:
    """Storage errors that reach a handler (through an actor's answer): bad data or an unavailable
    database are the client's and the operator's business respectively; the rest is a bug."""
    if isinstance(exc, InvalidData):
        return ValidationFailed(str(exc), details=[{"field": exc.field, "problem": exc.problem}])
    if isinstance(exc, StoreCircuitOpen):  # answered fast: the breaker says when a probe goes through
        return Unavailable("the database is unavailable; retry later", code="STORE_UNAVAILABLE",
                           retry_after_ms=max(1, math.ceil(exc.retry_after * 1000)))
    if isinstance(exc, StoreUnavailable):
        return Unavailable("the database is unavailable; retry later", code="STORE_UNAVAILABLE")
    if isinstance(exc, StoreError) and exc.retryable:
        return Unavailable("a transient database error; retry", code="STORE_BUSY")
    return None


def error_payload(err: ApiError, request_id: str) -> dict[str, Any]:
    return {"error": {"code": err.code, "message": err.message, "retryable": err.retryable,
                      "retryAfterMs": err.retry_after_ms, "requestId": request_id, "details": err.details}}


def error_response(err: ApiError, request_id: str) -> Response:
    headers = dict(err.headers)
    if err.status in (429, 503):
        # Retry-After is whole seconds; round up so a client never retries early.
        headers["Retry-After"] = str(max(1, math.ceil((err.retry_after_ms or 1000) / 1000)))
    body = json.dumps(error_payload(err, request_id), separators=(",", ":"), default=str)
    response: Response = current_app.response_class(body, status=err.status, headers=headers,
                                                    content_type="application/json")
    return response


__all__ = [
    "ApiError", "Conflict", "ErrorBody", "ErrorResponse", "Forbidden", "InternalError",
    "MethodNotAllowedError", "NotFound", "PayloadTooLarge", "RateLimited", "Unauthenticated",
    "Unavailable", "Unprocessable", "UnsupportedMediaType", "UpgradeRequired", "ValidationFailed", "error_payload",
    "ERROR_CODE_KEY", "error_response", "request_validation_error", "to_api_error", "validation_details",
]
