"""What the app's handlers depend on (``AppContext``), passed in explicitly and kept on the app object."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import trio
from quart import Quart, current_app

from actors.supervisor import Services
from kernel import NodeSnapshot

from ._auth import TokenVerifier
from ._errors import Unavailable
from ._health import HealthRegistry
from ._logging import AccessLog
from ._metrics import Dependencies, HttpMetrics
from ._settings import Settings

if TYPE_CHECKING:
    from ._ops_history import OpsHistory
    from ._routes import RequestIds, RouteSpec

EXTENSION_KEY = "vigil"


class ActorSystemLike(Protocol):
    """The part of ``kernel.ActorSystem`` transport uses: ``tree()``, and ``telemetry`` with
    ``subscribe()`` (an async context manager yielding an async iterator of events)."""

    telemetry: Any

    def tree(self) -> NodeSnapshot: ...


@dataclass(frozen=True, slots=True)
class AppContext:
    settings: Settings
    system: ActorSystemLike
    health: HealthRegistry
    metrics: HttpMetrics
    # Set when shutdown begins: /health turns 503 and long-lived streams close with 1001.
    draining: trio.Event
    routes: tuple[RouteSpec, ...]
    openapi_json: bytes  # rendered once at app creation: the routes cannot change afterwards
    tokens: TokenVerifier
    # The one-line-per-request log, batched while the app serves.
    access: AccessLog
    request_ids: RequestIds
    # The operator page's chart points (sampled while the app serves).
    history: OpsHistory
    # The domains' facades; None for an app over a bare actor tree (operators' endpoints only).
    domains: Services | None = None
    # The operator page's files, and the dependencies /metrics and the page read.
    static: Mapping[str, bytes] = field(default_factory=dict)
    dependencies: Dependencies = field(default_factory=Dependencies)


def app_context(app: Quart | None = None) -> AppContext:
    """What ``app`` (or the app handling the current request) was built with."""
    target = app if app is not None else current_app
    context = target.extensions.get(EXTENSION_KEY)
    if not isinstance(context, AppContext):
        raise RuntimeError("this app was not built by transport.create_app")
    return context


def domains() -> Services:
    """The domain facades of the app handling the current request."""
    found = app_context().domains
    if found is None:
        raise RuntimeError("this app was created without domain services (create_app(..., services=...)); "
                           "its user routes cannot run")
    return found


def refuse_while_draining() -> None:
    """503 SHUTTING_DOWN for new work once shutdown has begun."""
    if app_context().draining.is_set():
        raise Unavailable("the server is shutting down; retry on another instance", code="SHUTTING_DOWN")


def begin_drain(app: Quart) -> None:
    """Mark the app as shutting down (called by the server's shutdown trigger)."""
    app_context(app).draining.set()


__all__ = ["ActorSystemLike", "AppContext", "begin_drain", "domains", "app_context", "refuse_while_draining"]
