"""What the app's handlers depend on, passed in explicitly and kept on the app object."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import trio
from quart import Quart, current_app

from kernel import NodeSnapshot

from ._auth import TokenVerifier
from ._cpu_pool import CpuPool
from ._health import HealthRegistry
from ._logging import AccessLog
from ._metrics import HttpMetrics
from ._settings import Settings

if TYPE_CHECKING:
    from ._routes import RequestIds, RouteSpec

EXTENSION_KEY = "vigil"


class ActorSystemLike(Protocol):
    """The part of ``kernel.ActorSystem`` transport uses: ``tree()``, and ``telemetry`` with
    ``subscribe()`` (an async context manager yielding an async iterator of events)."""

    telemetry: Any

    def tree(self) -> NodeSnapshot: ...


@dataclass(frozen=True, slots=True)
class AppServices:
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
    # Worker processes for uploads' CPU-bound decoding; None: decode in this process.
    cpu_pool: CpuPool | None = None
    # Later dependencies (storage, redis, ...) by name, until they earn a typed field here.
    resources: Mapping[str, Any] = field(default_factory=dict)

    def resource(self, name: str) -> Any:
        try:
            return self.resources[name]
        except KeyError:
            raise LookupError(f"no resource {name!r} was passed to create_app "
                              f"(have: {', '.join(sorted(self.resources)) or 'none'})") from None


def get_services(app: Quart | None = None) -> AppServices:
    """The services of ``app``, or of the app handling the current request."""
    target = app if app is not None else current_app
    services = target.extensions.get(EXTENSION_KEY)
    if not isinstance(services, AppServices):
        raise RuntimeError("this app was not built by transport.create_app")
    return services


def begin_drain(app: Quart) -> None:
    """Mark the app as shutting down (called by the server's shutdown trigger)."""
    get_services(app).draining.set()


__all__ = ["ActorSystemLike", "AppServices", "begin_drain", "get_services"]
