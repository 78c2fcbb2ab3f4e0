"""Transport: the HTTP/WebSocket face of Vigil (Quart-Trio on hypercorn).

Data flows one way — transport → the domains' facades (``actors.supervisor.Services``) → actor
mailboxes → storage. Transport holds facades only: never actor paths, message classes or another
package's private modules; nothing imports transport. Everything public is re-exported here;
modules starting with ``_`` are internal.
"""

from ._app import VigilApp, create_app
from ._auth import authenticate_ops, authenticate_user, bearer_token, issue_token, verify_user_token
from ._context import ActorSystemLike, AppContext, app_context, begin_drain, domains, refuse_while_draining
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
from ._logging import JsonFormatter, configure_logging
from ._metrics import ActorTreeCollector, Dependencies, HttpMetrics
from ._openapi import build_openapi
from ._ops import HealthResponse, SupervisionNode, event_to_dict
from ._ops_history import HistoryConfig
from ._routes import (
    WS_GOING_AWAY,
    WS_UNAUTHENTICATED,
    ApiBlueprint,
    ApiModel,
    Reply,
    RouteSpec,
    current_request_id,
)
from ._samples import BatchUpsertResult, SamplesPage
from ._settings import DEV_JWT_SECRET, DEV_OPS_TOKEN, ConfigError, Settings
from ._users import SettingsBody

__all__ = [
    "DEV_JWT_SECRET", "DEV_OPS_TOKEN", "WS_GOING_AWAY", "WS_UNAUTHENTICATED",
    "ActorSystemLike", "ActorTreeCollector", "ApiBlueprint", "ApiError", "ApiModel", "AppContext",
    "BatchUpsertResult", "CheckResult", "ConfigError", "Conflict", "Dependencies", "ErrorResponse", "Forbidden", "HealthRegistry",
    "HealthReport", "HistoryConfig",
    "HealthResponse", "HttpMetrics", "InternalError", "JsonFormatter", "MethodNotAllowedError", "NotFound",
    "PayloadTooLarge", "RateLimited", "Reply", "RouteSpec", "SamplesPage", "Settings", "SettingsBody",
    "SupervisionNode", "Unauthenticated",
    "Unavailable", "Unprocessable", "UnsupportedMediaType", "UpgradeRequired", "ValidationFailed", "VigilApp",
    "authenticate_ops", "authenticate_user", "bearer_token", "begin_drain", "build_openapi",
    "configure_logging", "create_app", "current_request_id", "domains", "event_to_dict",
    "app_context", "issue_token", "refuse_while_draining", "to_api_error", "verify_user_token",
]
