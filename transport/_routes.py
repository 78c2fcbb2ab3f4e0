"""The route registry: routes declare their auth and pydantic models once, and from that
declaration come the request parsing, the response serialization and the OpenAPI document.

Adding a blueprint later (ingestion, sync, ...)::

    api = ApiBlueprint("health", url_prefix="/v1/health", tags=["health"])

    @api.post("/samples/batch-upsert", body=BatchUpsert, response=BatchUpsertResult,
              summary="Upsert a batch of health samples")
    async def batch_upsert(*, user_id: str, body: BatchUpsert) -> BatchUpsertResult:
        ...

    create_app(settings, system=system, blueprints=[api])

The handler gets keyword arguments: the path parameters, ``user_id`` (``auth="user"``, the
default), ``body`` (when ``body=`` is given) and ``query`` (when ``query=`` is given). It returns
a model (or a dict/list the ``response`` model validates), a ``Reply`` for another status or
extra headers, or a Quart ``Response`` as an escape hatch.
"""

from __future__ import annotations

import inspect
import itertools
import json
import logging
import re
import types
import uuid
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import trio
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from pydantic.alias_generators import to_camel
from quart import Quart, Response, current_app, g, has_request_context, request
from quart import websocket as current_websocket
from werkzeug.wrappers import Response as WerkzeugResponse

from ._auth import authenticate_ops, bearer_token
from ._context import app_context
from ._errors import (
    PayloadTooLarge,
    RateLimited,
    Unauthenticated,
    UnsupportedMediaType,
    ValidationFailed,
    error_response,
    request_validation_error,
)
from ._limits import quota_headers
from ._logging import server_time

Auth = Literal["user", "ops", "none"]
Handler = Callable[..., Awaitable[Any]]
H = TypeVar("H", bound=Handler)

WS_UNAUTHENTICATED = 4401  # API.md: a bad credential closes a WebSocket with 4401
WS_GOING_AWAY = 1001
WS_INTERNAL_ERROR = 1011

access_log = logging.getLogger("vigil.access")
log = logging.getLogger("vigil.transport")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# A Quart/werkzeug rule parameter: <name> or <converter:name> or <converter(args):name>.
RULE_PARAM = re.compile(r"<(?:(?P<conv>[a-zA-Z_]+)(?:\([^)]*\))?:)?(?P<name>[a-zA-Z_][a-zA-Z0-9_]*)>")
_HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})


class ApiModel(BaseModel):
    """Base of request/response models: snake_case in Python, camelCase on the wire."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


@dataclass(frozen=True, slots=True)
class Reply:
    """A handler result with a status or headers other than the route's defaults."""

    content: Any
    status: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """One registered route, as the OpenAPI document and the app see it."""

    method: str  # an HTTP method, or "WEBSOCKET"
    path: str  # Quart rule syntax, with the blueprint's prefix: "/v1/exports/<export_id>"
    endpoint: str
    summary: str
    auth: Auth
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: Any = None  # a model, or a type such as list[Model]; None for non-JSON bodies
    status: int = 200
    media_type: str = "application/json"
    tags: tuple[str, ...] = ()
    errors: tuple[int, ...] = ()
    close_codes: tuple[tuple[int, str], ...] = ()  # a WebSocket's own close codes, beyond the common ones
    headers: tuple[tuple[str, bool, str], ...] = ()  # request headers the handler reads: (name, required, pattern)

    @property
    def websocket(self) -> bool:
        return self.method == "WEBSOCKET"


# -- per-request plumbing, shared with _app ---------------------------------------------------------
def current_request_id() -> str:
    """The request's own ``X-Request-ID`` when it is well-formed, else a generated one; fixed for
    the rest of the request."""
    rid: str | None = g.get("request_id")
    if rid is None:
        conn = request if has_request_context() else current_websocket
        given = (conn.headers.get("X-Request-ID") or "").strip()
        rid = given if _REQUEST_ID.fullmatch(given) else app_context().request_ids.new()
        g.request_id = rid
    return rid


class RequestIds:
    """Ids for requests that bring none: UUID-shaped, a random 80-bit prefix per app and a 48-bit
    counter, so they are unique without a random draw (a syscall) per request."""

    def __init__(self) -> None:
        head = uuid.uuid4().hex
        self._prefix = f"{head[:8]}-{head[8:12]}-{head[12:16]}-{head[16:20]}-"
        self._counter = itertools.count(int(head[20:], 16))

    def new(self) -> str:
        return f"{self._prefix}{next(self._counter) & 0xFFFF_FFFF_FFFF:012x}"


# -- request parsing ------------------------------------------------------------------------------
async def read_json_bytes() -> bytes:
    """The raw body of a JSON request: 415 unless JSON (UTF-8), 413 past the size limit."""
    mimetype = request.mimetype
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise UnsupportedMediaType(f"expected application/json, got {mimetype or 'no content type'}",
                                   details={"expected": "application/json"})
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise UnsupportedMediaType(f"JSON must be UTF-8, got charset {charset}")
    # Raises RequestEntityTooLarge (→ 413) as soon as the streamed body passes MAX_CONTENT_LENGTH.
    raw = await request.get_data(cache=True, as_text=False)
    g.body_read = True
    assert isinstance(raw, bytes), "get_data(as_text=False) gives bytes"
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding in ("gzip", "x-gzip"):
        return inflate_gzip(raw, app_context().settings.max_body_bytes)
    raise UnsupportedMediaType(f"unsupported Content-Encoding {encoding!r}; send gzip or identity",
                               details={"supportedEncodings": ["gzip", "identity"]})


_INFLATE_CHUNK = 64 * 1024


def inflate_gzip(data: bytes, limit: int) -> bytes:
    """``data`` (one or more gzip members) inflated: 413 as soon as the output passes ``limit`` — a small
    bomb is never inflated beyond it — and 400 when it is not valid gzip."""
    out = bytearray()
    pending = data
    try:
        while True:
            inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            chunk = inflater.decompress(pending, limit + 1 - len(out))
            while True:
                out += chunk
                if len(out) > limit:
                    raise PayloadTooLarge(f"the inflated request body passes the limit of {limit} bytes",
                                          details={"maxBytes": limit})
                if not inflater.unconsumed_tail:
                    break
                chunk = inflater.decompress(inflater.unconsumed_tail, min(_INFLATE_CHUNK, limit + 1 - len(out)))
            if not inflater.eof:
                raise request_body_error("the gzip body is truncated")
            pending = inflater.unused_data
            if not pending:
                return bytes(out)
    except zlib.error as exc:
        raise request_body_error(f"the body is not valid gzip: {exc}") from None


def request_body_error(message: str) -> ValidationFailed:
    return ValidationFailed(message, details=[{"in": "body", "path": "", "problem": message,
                                               "type": "content_encoding_invalid"}])


def validate_body(model: type[BaseModel], raw: bytes) -> Any:
    """``raw`` validated as ``model``; 400 (with each field's problem) when malformed or invalid."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise request_validation_error(exc, location="body", model=model) from None


async def read_json_body(model: type[BaseModel]) -> Any:
    """The body validated as ``model``: 415 unless JSON, 413 past the size limit, 400 when
    malformed or invalid."""
    return validate_body(model, await read_json_bytes())


def parse_query(model: type[BaseModel]) -> Any:
    multi = {f.alias or name for name, f in model.model_fields.items() if _is_sequence(f.annotation)}
    data: dict[str, Any] = {}
    for key, values in request.args.lists():
        data[key] = values if key in multi else values[-1]
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise request_validation_error(exc, location="query", model=model) from None


def _is_sequence(annotation: Any) -> bool:
    origin = get_origin(annotation)
    if origin in (list, tuple, set, frozenset):
        return True
    if origin in (Union, types.UnionType):
        return any(_is_sequence(arg) for arg in get_args(annotation))
    return False


def _check_signature(handler: Handler, path: str, injected: Sequence[str]) -> None:
    """Fail at import time, not on the first request, when a handler cannot take what the route
    will pass it."""
    names = [m.group("name") for m in RULE_PARAM.finditer(path)] + list(injected)
    params = inspect.signature(handler).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    missing = [n for n in names if n not in params or params[n].kind is inspect.Parameter.POSITIONAL_ONLY]
    extra = [n for n, p in params.items() if n not in names and p.default is inspect.Parameter.empty
             and p.kind is not inspect.Parameter.VAR_POSITIONAL]
    if missing or extra:
        raise TypeError(f"handler {handler.__qualname__} for {path}: must accept the keyword arguments "
                        f"{names} (missing {missing}, unexpected required {extra})")
    if not inspect.iscoroutinefunction(handler):
        raise TypeError(f"handler {handler.__qualname__} for {path} must be an async function")


# -- response rendering ----------------------------------------------------------------------------
def _render(spec: RouteSpec, adapter: TypeAdapter[Any] | None, result: Any) -> Any:
    content, status, headers = result, spec.status, {}
    if isinstance(result, Reply):
        content, status, headers = result.content, result.status or spec.status, dict(result.headers)
    if isinstance(content, Response | WerkzeugResponse):
        return content
    if content is None:
        return current_app.response_class(b"", status=204 if status == 200 else status, headers=headers)
    if adapter is not None:
        # Validating what the handler returned keeps the published schema honest; a mismatch is
        # a server bug (500), never the client's fault.
        if not (isinstance(spec.response, type) and isinstance(content, spec.response)):
            content = adapter.validate_python(content)
        body = adapter.dump_json(content, by_alias=True)
    elif isinstance(content, BaseModel):
        body = content.model_dump_json(by_alias=True).encode()
    else:
        body = json.dumps(content, separators=(",", ":")).encode()
    return current_app.response_class(body, status=status, headers=headers, content_type=spec.media_type)


# -- the blueprint ---------------------------------------------------------------------------------
class ApiBlueprint:
    """A Quart blueprint whose routes are recorded (with their models) for the OpenAPI document."""

    def __init__(self, name: str, *, url_prefix: str = "", tags: Sequence[str] = ()) -> None:
        if url_prefix and (not url_prefix.startswith("/") or url_prefix.endswith("/")):
            raise ValueError(f"url_prefix starts with '/' and does not end with one, got {url_prefix!r}")
        self.name = name
        self.url_prefix = url_prefix
        self.tags = tuple(tags)
        self._routes: list[RouteSpec] = []
        # (full path, view, methods; None for a WebSocket), added to the app by register().
        self._views: list[tuple[str, Callable[..., Awaitable[Any]], list[str] | None]] = []

    @property
    def routes(self) -> tuple[RouteSpec, ...]:
        return tuple(self._routes)

    def route(self, method: str, path: str, *, summary: str, auth: Auth = "user",
              body: type[BaseModel] | None = None, query: type[BaseModel] | None = None,
              response: Any = None, status: int = 200, media_type: str = "application/json",
              errors: Sequence[int] = (), tags: Sequence[str] = (),
              raw_body: bool = False, headers: Sequence[tuple[str, bool, str]] = ()) -> Callable[[H], H]:
        """``raw_body``: the handler gets ``raw`` (the body's bytes, after the content-type and size
        checks) instead of ``body``, and validates it with :func:`validate_body` when it chooses — to
        refuse cheaply first (a full queue), or to wait for its turn before spending the CPU. ``body``
        still documents the request in OpenAPI. ``headers`` documents the request headers the handler reads
        itself: (name, required, regex pattern)."""
        method = method.upper()
        if method not in _HTTP_METHODS:
            raise ValueError(f"unsupported method {method!r}; use one of {sorted(_HTTP_METHODS)}")
        if auth not in ("user", "ops", "none"):
            raise ValueError(f"auth is 'user', 'ops' or 'none', got {auth!r}")
        if body is not None and method == "GET":
            raise ValueError(f"GET {path} cannot take a body model")
        if raw_body and body is None:
            raise ValueError(f"{method} {path}: raw_body needs the body model it will be validated as")

        def decorator(handler: H) -> H:
            spec = RouteSpec(method=method, path=self.url_prefix + path, endpoint=f"{self.name}.{handler.__name__}",
                             summary=summary, auth=auth, body=body, query=query, response=response,
                             status=status, media_type=media_type, tags=tuple(tags) or self.tags,
                             errors=tuple(errors), headers=tuple(headers))
            adapter = TypeAdapter(response) if response is not None else None
            _check_signature(handler, path, [name for name, used in (
                ("user_id", auth == "user"), ("query", query is not None),
                ("body", body is not None and not raw_body), ("raw", raw_body)) if used])

            async def view(**path_params: Any) -> Any:
                context = app_context()
                settings = context.settings
                kwargs: dict[str, Any] = dict(path_params)
                authorization = request.headers.get("Authorization")
                limits = context.limits
                # Auth first: an anonymous caller learns nothing about the body's validity. Then the rate
                # limits, the client's IP and the user together; a bad token counts against its IP alone.
                if auth == "user":
                    try:
                        kwargs["user_id"] = g.user_id = context.tokens.user_id(bearer_token(authorization))
                    except Unauthenticated:
                        if limits is not None:
                            await limits.check(request.remote_addr, None)
                        raise
                    if limits is not None:
                        await limits.check(request.remote_addr, kwargs["user_id"])
                elif auth == "ops":
                    authenticate_ops(settings.ops_token, authorization)
                if query is not None:
                    kwargs["query"] = parse_query(query)
                if raw_body:
                    kwargs["raw"] = await read_json_bytes()
                elif body is not None:
                    kwargs["body"] = await read_json_body(body)
                return _render(spec, adapter, await handler(**kwargs))

            view.__name__ = handler.__name__
            view.__doc__ = handler.__doc__
            self._views.append((spec.path, view, [method]))
            self._routes.append(spec)
            return handler

        return decorator

    def register(self, app: Quart) -> None:
        """Add this blueprint's routes to ``app`` as the app's own rules, not as a Quart blueprint:
        Quart walks the blueprint chain for hooks and handlers several times per request, and
        ours have none (the app's hooks do auth, ids, metrics and logs for every route alike)."""
        for path, view, methods in self._views:
            endpoint = f"{self.name}:{view.__name__}"  # no '.', which Quart reads as a blueprint
            if methods is None:
                app.add_websocket(path, endpoint, view)
            else:
                app.add_url_rule(path, endpoint, view, methods=methods)

    def get(self, path: str, **kw: Any) -> Callable[[H], H]:
        return self.route("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Callable[[H], H]:
        return self.route("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> Callable[[H], H]:
        return self.route("PUT", path, **kw)

    def patch(self, path: str, **kw: Any) -> Callable[[H], H]:
        return self.route("PATCH", path, **kw)

    def delete(self, path: str, **kw: Any) -> Callable[[H], H]:
        return self.route("DELETE", path, **kw)

    def websocket(self, path: str, *, summary: str, auth: Auth = "user", tags: Sequence[str] = (),
                  query: type[BaseModel] | None = None,
                  close_codes: Mapping[int, str] | None = None) -> Callable[[H], H]:
        """A WebSocket route. Credentials come from ``Authorization`` or ``?token=``; a bad one is
        accepted then closed with 4401 (a close code is the only error a browser client can read).
        A user route's connect counts against the rate limits as an HTTP request does (the client IP and
        the user together; a bad credential against its IP alone): past them, the upgrade is refused with
        an HTTP 429 ``RATE_LIMITED`` (``Retry-After``, the ``RateLimit-*`` headers) and nothing is accepted.
        The handler is called after the accept, with the path parameters and ``user_id``. ``query``
        and ``close_codes`` document the handler's own parameters and closes (it checks them itself:
        its errors are close codes too)."""
        if auth not in ("user", "ops", "none"):
            raise ValueError(f"auth is 'user', 'ops' or 'none', got {auth!r}")

        def decorator(handler: H) -> H:
            spec = RouteSpec(method="WEBSOCKET", path=self.url_prefix + path,
                             endpoint=f"{self.name}.{handler.__name__}", summary=summary, auth=auth,
                             status=101, tags=tuple(tags) or self.tags, query=query,
                             close_codes=tuple(sorted((close_codes or {}).items())))
            _check_signature(handler, path, ["user_id"] if auth == "user" else [])

            async def view(**path_params: Any) -> Response | None:
                context = app_context()
                started = trio.current_time()
                rid = current_request_id()
                outcome = "closed"
                kwargs: dict[str, Any] = dict(path_params)
                query_token = current_websocket.args.get("token")
                authorization = current_websocket.headers.get("Authorization")
                try:
                    refused: Unauthenticated | None = None
                    try:
                        if auth == "user":
                            kwargs["user_id"] = g.user_id = context.tokens.user_id(
                                bearer_token(authorization) or query_token)
                        elif auth == "ops":
                            authenticate_ops(context.settings.ops_token, authorization, query_token)
                    except Unauthenticated as exc:
                        refused = exc
                    if auth == "user" and context.limits is not None:
                        try:
                            await context.limits.check(current_websocket.remote_addr, kwargs.get("user_id"))
                        except RateLimited as exc:
                            outcome = "rate_limited"
                            return _upgrade_refused(exc, rid)
                    if refused is not None:
                        outcome = "unauthenticated"
                        await current_websocket.accept(headers={"X-Request-ID": rid, "Server-Time": server_time()})
                        await current_websocket.close(WS_UNAUTHENTICATED, refused.message)
                        return None
                    await current_websocket.accept(headers={"X-Request-ID": rid, "Server-Time": server_time()})
                    try:
                        await handler(**kwargs)
                    except Exception:
                        outcome = "error"
                        log.exception("websocket handler failed",
                                      extra={"fields": {"path": current_websocket.path, "requestId": rid}})
                        await current_websocket.close(WS_INTERNAL_ERROR, "internal error")
                    return None
                finally:
                    context.access.add("websocket", {
                        "method": "WEBSOCKET", "path": current_websocket.path, "route": spec.path, "outcome": outcome,
                        "durationMs": round((trio.current_time() - started) * 1000, 3),
                        "requestId": rid, "userId": g.get("user_id")})

            view.__name__ = handler.__name__
            self._views.append((spec.path, view, None))
            self._routes.append(spec)
            return handler

        return decorator


def _upgrade_refused(err: RateLimited, rid: str) -> Response:
    """The HTTP answer to an upgrade refused before it was accepted (Quart sends a view's response then)."""
    response = error_response(err, rid)
    response.headers.update({**quota_headers(), "X-Request-ID": rid, "Server-Time": server_time()})
    return response


__all__ = ["ApiBlueprint", "ApiModel", "Auth", "Reply", "RequestIds", "RouteSpec", "current_request_id",
           "parse_query", "read_json_body", "read_json_bytes", "validate_body"]
