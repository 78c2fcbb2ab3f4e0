"""The OpenAPI 3.1 document, generated from the route registry and its pydantic models.

Nothing here is written by hand per route, so the document cannot drift from the code: a route
is in it because it was registered, with the models it validates against.

WebSocket routes are not HTTP operations (OpenAPI has no object for them, and a plain GET to one
is answered 426): they are listed under the top-level extension ``x-websockets`` instead of
``paths``, with their auth, query parameters and close codes, so client authors find them and
tools that exercise ``paths`` do not mistake them for GETs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode

from ._errors import ErrorResponse
from ._routes import RULE_PARAM, RouteSpec

_CONVERTER_SCHEMA = {"int": {"type": "integer"}, "float": {"type": "number"}, "uuid": {"type": "string", "format": "uuid"}}
_REF = "#/components/schemas/{model}"


def openapi_path(rule: str) -> str:
    """``/v1/exports/<export_id>`` → ``/v1/exports/{export_id}``."""
    return RULE_PARAM.sub(lambda m: "{" + m.group("name") + "}", rule)


def _path_parameters(rule: str) -> list[dict[str, Any]]:
    return [{"name": m.group("name"), "in": "path", "required": True,
             "schema": dict(_CONVERTER_SCHEMA.get(m.group("conv") or "", {"type": "string"}))}
            for m in RULE_PARAM.finditer(rule)]


class _Schemas:
    """Collects component schemas from models and types, with refs into components."""

    def __init__(self) -> None:
        self.components: dict[str, Any] = {}

    def ref(self, tp: Any, mode: JsonSchemaMode) -> dict[str, Any]:
        schema = TypeAdapter(tp).json_schema(mode=mode, ref_template=_REF, schema_generator=GenerateJsonSchema)
        defs = schema.pop("$defs", {})
        for name, definition in defs.items():
            self._add(name, definition)
        if set(schema) == {"$ref"}:
            return schema  # a recursive model: pydantic already put it in $defs
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            name = tp.model_config.get("title") or tp.__name__
            self._add(name, schema)
            return {"$ref": _REF.format(model=name)}
        return schema

    def _add(self, name: str, schema: dict[str, Any]) -> None:
        existing = self.components.get(name)
        if existing is not None and existing != schema:
            # Two different models under one name would silently overwrite each other.
            raise ValueError(f"two different schemas are named {name!r}; give one a distinct title")
        self.components[name] = schema


def build_openapi(routes: Sequence[RouteSpec], *, title: str, version: str) -> dict[str, Any]:
    schemas = _Schemas()
    error_ref = schemas.ref(ErrorResponse, "serialization")
    error_content = {"application/json": {"schema": error_ref}}
    paths: dict[str, dict[str, Any]] = {}
    websockets: dict[str, dict[str, Any]] = {}

    for spec in routes:
        op: dict[str, Any] = {"operationId": spec.endpoint.replace(".", "_"), "summary": spec.summary}
        if spec.tags:
            op["tags"] = list(spec.tags)
        op["security"] = {"user": [{"userBearer": []}], "ops": [{"opsBearer": []}], "none": []}[spec.auth]
        params = _path_parameters(spec.path)
        if spec.query is not None:
            query_schema = schemas.ref(spec.query, "validation")
            target = schemas.components[query_schema["$ref"].rsplit("/", 1)[-1]]
            required = set(target.get("required", []))
            for name, prop in target.get("properties", {}).items():
                params.append({"name": name, "in": "query", "required": name in required, "schema": prop})
        for name, needed, pattern in spec.headers:
            params.append({"name": name, "in": "header", "required": needed,
                           "schema": {"type": "string", "pattern": pattern}})
        if spec.websocket:
            if spec.auth != "none":
                params.append({"name": "token", "in": "query", "required": False, "schema": {"type": "string"},
                               "description": "the bearer token, for clients that cannot set headers"})
            websockets[openapi_path(spec.path)] = {
                **op, "parameters": params,
                "closeCodes": {"1000": "normal closure", "1001": "server shutting down",
                               "1011": "internal error",
                               **({"4401": "missing or bad credentials"} if spec.auth != "none" else {}),
                               **{str(code): meaning for code, meaning in spec.close_codes}},
                # HTTP answers instead of the upgrade (a user route's connect counts against the rate limits).
                "upgradeRefusals": {"429": "RATE_LIMITED, with Retry-After: past the IP or user rate limit"}
                if spec.auth == "user" else {},
            }
            continue
        if spec.body is not None:
            op["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": schemas.ref(spec.body, "validation")}}}
        ok: dict[str, Any] = {"description": spec.summary or "OK"}
        if spec.response is not None:
            ok["content"] = {spec.media_type: {"schema": schemas.ref(spec.response, "serialization")}}
        elif spec.media_type != "application/json":
            ok["content"] = {spec.media_type: {"schema": {"type": "string"}}}
        responses: dict[str, Any] = {str(spec.status): ok}
        codes = set(spec.errors)
        if spec.auth != "none":
            codes.add(401)
        if spec.auth == "user":
            codes.add(429)  # the per-IP and per-user rate limits (transport/_limits.py)
        if spec.body is not None:
            codes.update({400, 413, 415})
        if spec.query is not None:
            codes.add(400)
        for code in sorted(codes):
            responses.setdefault(str(code), {"description": "error", "content": error_content})
        responses["default"] = {"description": "error", "content": error_content}
        op["responses"] = responses
        if params:
            op["parameters"] = params
        paths.setdefault(openapi_path(spec.path), {})[spec.method.lower()] = op

    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": dict(sorted(paths.items())),
        "x-websockets": dict(sorted(websockets.items())),
        "components": {
            "schemas": dict(sorted(schemas.components.items())),
            "securitySchemes": {
                "userBearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "opsBearer": {"type": "http", "scheme": "bearer", "description": "the operator token"},
            },
        },
    }


__all__ = ["build_openapi", "openapi_path"]
