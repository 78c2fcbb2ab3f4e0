"""Transport: the HTTP/WebSocket face of Vigil (Quart-Trio on hypercorn).

Data flows one way — transport → actor mailboxes → storage — so transport may import ``kernel``
and ``storage``, never the reverse. Everything public is re-exported here; modules starting with
``_`` are internal.
"""

from ._app import VigilApp, create_app
from ._auth import authenticate_ops, authenticate_user, bearer_token, issue_token, verify_user_token
from ._cpu_pool import (
    BACKGROUND_NICENESS,
    GC_THRESHOLDS,
    CpuPool,
    CpuPoolBroken,
    default_processes,
    open_cpu_pool,
    tune_gc,
)
from ._errors import (
    ApiError,
    Conflict,
    ErrorResponse,
    Forbidden,
    InternalError,
    MethodNotAllowedError,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthenticated,
    Unavailable,
    Unprocessable,
    UnsupportedMediaType,
    UpgradeRequired,
    ValidationFailed,
    to_api_error,
)
from ._health import CheckResult, HealthRegistry, HealthReport
from ._ingest import health as health_blueprint
from ._ingest import users as users_blueprint
from ._logging import JsonFormatter, configure_logging
from ._metrics import ActorTreeCollector, HttpMetrics
from ._openapi import build_openapi
from ._ops import HealthResponse, SupervisionNode, event_to_dict
from ._routes import (
    WS_GOING_AWAY,
    WS_UNAUTHENTICATED,
    ApiBlueprint,
    ApiModel,
    Reply,
    RouteSpec,
    current_request_id,
)
from ._services import ActorSystemLike, AppServices, begin_drain, get_services
from ._settings import DEV_JWT_SECRET, DEV_OPS_TOKEN, ConfigError, Settings


def user_blueprints() -> list[ApiBlueprint]:
    """The user-facing API (settings, ingestion) for ``create_app(..., blueprints=...)``."""
    return [users_blueprint, health_blueprint]


__all__ = [
    "DEV_JWT_SECRET", "DEV_OPS_TOKEN", "WS_GOING_AWAY", "WS_UNAUTHENTICATED",
    "ActorSystemLike", "ActorTreeCollector", "ApiBlueprint", "ApiError", "ApiModel", "AppServices",
    "BACKGROUND_NICENESS", "GC_THRESHOLDS", "CheckResult", "ConfigError", "Conflict", "CpuPool", "CpuPoolBroken", "ErrorResponse", "Forbidden", "HealthRegistry", "HealthReport",
    "HealthResponse", "HttpMetrics", "InternalError", "JsonFormatter", "MethodNotAllowedError", "NotFound",
    "PayloadTooLarge", "RateLimited", "Reply", "RouteSpec", "Settings", "SupervisionNode", "Unauthenticated",
    "Unavailable", "Unprocessable", "UnsupportedMediaType", "UpgradeRequired", "ValidationFailed", "VigilApp",
    "authenticate_ops", "authenticate_user", "bearer_token", "begin_drain", "build_openapi",
    "configure_logging", "create_app", "current_request_id", "default_processes", "event_to_dict",
    "get_services", "issue_token", "open_cpu_pool", "to_api_error", "tune_gc", "user_blueprints", "verify_user_token",
]
