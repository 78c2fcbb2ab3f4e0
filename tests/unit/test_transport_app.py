"""The HTTP conventions of API.md: error shape, request ids, body limits, auth, the route registry
and the OpenAPI document. Runs the app in-process with Quart's test client and a real kernel."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
import trio
from pydantic import Field
from quart_trio import QuartTrio

from kernel import Actor, ActorSystem, AskTimeout, ChildSpec, MailboxFull, Supervisor
from transport import (
    ApiBlueprint,
    ApiModel,
    Conflict,
    RateLimited,
    Reply,
    Settings,
    Unavailable,
    app_context,
    create_app,
    issue_token,
)
from transport._openapi import openapi_path

SECRET = "unit-test-jwt-secret-" + "0123456789abcdef" * 3  # 64 bytes: no pyjwt key warnings
OPS = "unit-test-ops-token-0123456789abcdef"
SETTINGS = Settings(jwt_secret=SECRET, ops_token=OPS, max_body_bytes=1024)


class Echo(Actor):
    async def receive(self, msg: Any) -> Any:
        return msg


class Item(ApiModel):
    metric_name: str = Field(min_length=1)
    value: float
    tags: list[str] = []


class ItemResult(ApiModel):
    user_id: str
    metric_name: str
    count: int


class ListQuery(ApiModel):
    limit: int = Field(default=10, ge=1, le=100)
    metric: list[str] = []


def sample_blueprint() -> ApiBlueprint:
    """What a later issue's blueprint looks like; also the fixture for body/auth error paths."""
    api = ApiBlueprint("samples", url_prefix="/v1/test", tags=["test"])

    @api.post("/items", body=Item, response=ItemResult, summary="Echo an item")
    async def create_item(*, user_id: str, body: Item) -> ItemResult:
        return ItemResult(user_id=user_id, metric_name=body.metric_name, count=len(body.tags))

    @api.get("/items", query=ListQuery, summary="Echo the query")
    async def list_items(*, user_id: str, query: ListQuery) -> Any:
        return {"limit": query.limit, "metric": query.metric}

    @api.get("/items/<int:item_id>", response=ItemResult, summary="A dict validated by the response model")
    async def get_item(*, user_id: str, item_id: int) -> Any:
        return {"userId": user_id, "metricName": f"m{item_id}", "count": item_id}

    @api.put("/items/<item_id>", body=Item, summary="Reply with status and headers")
    async def put_item(*, user_id: str, item_id: str, body: Item) -> Any:
        return Reply({"id": item_id}, status=201, headers={"Idempotent-Replay": "true"})

    @api.get("/boom", auth="none", summary="A bug")
    async def boom() -> Any:
        raise RuntimeError("secret internals: sample value 61.0")

    @api.get("/busy", auth="none", summary="Backpressure")
    async def busy() -> Any:
        raise RateLimited("lane is full", code="LANE_BACKPRESSURE", retry_after_ms=2500)

    @api.get("/down", auth="none", summary="Unavailable")
    async def down() -> Any:
        raise Unavailable("AI is not configured", code="AI_UNAVAILABLE")

    @api.get("/conflict", auth="none", summary="A specific conflict")
    async def conflict() -> Any:
        raise Conflict("still processing", code="REQUEST_IN_PROGRESS", details={"requestId": "r1"})

    @api.get("/full", auth="none", summary="A kernel mailbox is full")
    async def full() -> Any:
        raise MailboxFull("root/echo", 8)

    @api.get("/slow", auth="none", summary="An ask timed out")
    async def slow() -> Any:
        raise AskTimeout("root/echo", 1.0)

    @api.get("/bad-response", auth="none", response=ItemResult, summary="Drift between code and schema")
    async def bad_response() -> Any:
        return {"unexpected": True}

    return api


@pytest.fixture
async def app() -> AsyncIterator[QuartTrio]:
    tree = Supervisor("root", children=[ChildSpec("echo", Echo)])
    async with ActorSystem.start(tree, seed=1) as system:
        yield create_app(SETTINGS, system=system, blueprints=[sample_blueprint()])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def user_headers(user: str = "alice") -> dict[str, str]:
    return bearer(issue_token(SECRET, user))


async def error_of(response: Any, status: int, code: str) -> dict[str, Any]:
    """Assert the API.md error shape and return its ``error`` member."""
    assert response.status_code == status, await response.get_data(as_text=True)
    assert response.content_type == "application/json"
    body = await response.get_json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"code", "message", "retryable", "retryAfterMs", "requestId", "details"}
    assert err["code"] == code
    assert isinstance(err["message"], str) and err["message"]
    assert err["requestId"] == response.headers["X-Request-ID"]
    return err  # type: ignore[no-any-return]


# -- routing errors ----------------------------------------------------------------------------------
async def test_unknown_path_is_404_in_the_error_shape(app: QuartTrio) -> None:
    err = await error_of(await app.test_client().get("/no/such/thing"), 404, "NOT_FOUND")
    assert err["retryable"] is False and err["retryAfterMs"] is None


async def test_wrong_method_is_405_with_allow(app: QuartTrio) -> None:
    response = await app.test_client().delete("/health")
    err = await error_of(response, 405, "METHOD_NOT_ALLOWED")
    assert "GET" in err["details"]["allowed"]
    assert "GET" in response.headers["Allow"]


# -- bodies ------------------------------------------------------------------------------------------
async def test_valid_body_round_trips_with_camel_case(app: QuartTrio) -> None:
    response = await app.test_client().post("/v1/test/items", headers=user_headers("bob"),
                                            json={"metricName": "steps", "value": 3, "tags": ["a", "b"]})
    assert response.status_code == 200
    assert await response.get_json() == {"userId": "bob", "metricName": "steps", "count": 2}


async def test_malformed_json_is_400_validation_error(app: QuartTrio) -> None:
    response = await app.test_client().post("/v1/test/items", data=b'{"metricName": "steps",',
                                            headers={**user_headers(), "Content-Type": "application/json"})
    err = await error_of(response, 400, "VALIDATION_ERROR")
    assert "not valid JSON" in err["message"]
    assert err["details"][0]["type"] == "json_invalid"


async def test_invalid_fields_list_each_path_and_problem_without_values(app: QuartTrio) -> None:
    response = await app.test_client().post("/v1/test/items", headers=user_headers(),
                                            json={"metricName": "", "value": "sixty-one", "tags": [1]})
    err = await error_of(response, 400, "VALIDATION_ERROR")
    paths = {d["path"] for d in err["details"]}
    assert paths == {"metricName", "value", "tags.0"}
    assert all(d["problem"] and d["in"] == "body" for d in err["details"])
    assert "sixty-one" not in json.dumps(err)  # never echo the submitted values


async def test_wrong_content_type_is_415(app: QuartTrio) -> None:
    response = await app.test_client().post("/v1/test/items", data="metric=steps",
                                            headers={**user_headers(), "Content-Type": "text/plain"})
    await error_of(response, 415, "UNSUPPORTED_MEDIA_TYPE")


async def test_missing_content_type_is_415(app: QuartTrio) -> None:
    response = await app.test_client().post("/v1/test/items", data=b"{}", headers=user_headers())
    await error_of(response, 415, "UNSUPPORTED_MEDIA_TYPE")


async def test_oversized_body_by_content_length_is_413_before_reading(app: QuartTrio) -> None:
    client = app.test_client()
    headers = {**user_headers(), "Content-Type": "application/json", "Content-Length": "999999"}
    async with client.request("/v1/test/items", method="POST", headers=headers) as conn:
        # Not one byte of the body is sent: the answer must come from the header alone.
        response = await conn.as_response()
    err = await error_of(response, 413, "PAYLOAD_TOO_LARGE")
    assert err["details"] == {"maxBytes": 1024}


async def test_oversized_streamed_body_without_length_is_413(app: QuartTrio) -> None:
    client = app.test_client()
    headers = {**user_headers(), "Content-Type": "application/json"}
    async with client.request("/v1/test/items", method="POST", headers=headers) as conn:
        for _ in range(5):
            await conn.send(b" " * 400)  # 2000 bytes in chunks, past the 1024 limit
        await conn.send_complete()
        response = await conn.as_response()
    await error_of(response, 413, "PAYLOAD_TOO_LARGE")


async def test_query_model_parses_repeated_and_rejects_invalid(app: QuartTrio) -> None:
    client = app.test_client()
    ok = await client.get("/v1/test/items?limit=5&metric=a&metric=b", headers=user_headers())
    assert await ok.get_json() == {"limit": 5, "metric": ["a", "b"]}
    err = await error_of(await client.get("/v1/test/items?limit=0", headers=user_headers()),
                         400, "VALIDATION_ERROR")
    assert err["details"][0]["in"] == "query" and err["details"][0]["path"] == "limit"


async def test_path_params_and_response_model_validation(app: QuartTrio) -> None:
    response = await app.test_client().get("/v1/test/items/7", headers=user_headers("carol"))
    assert await response.get_json() == {"userId": "carol", "metricName": "m7", "count": 7}


async def test_reply_sets_status_and_headers(app: QuartTrio) -> None:
    response = await app.test_client().put("/v1/test/items/x1", headers=user_headers(),
                                           json={"metricName": "steps", "value": 1})
    assert response.status_code == 201
    assert response.headers["Idempotent-Replay"] == "true"


# -- unexpected and mapped errors --------------------------------------------------------------------
async def test_unexpected_exception_is_500_without_internals(app: QuartTrio, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="vigil.transport"):
        response = await app.test_client().get("/v1/test/boom")
    err = await error_of(response, 500, "INTERNAL")
    text = json.dumps(err)
    assert "secret internals" not in text and "Traceback" not in text and "61.0" not in text
    logged = [r for r in caplog.records if r.name == "vigil.transport" and r.exc_info]
    assert logged and logged[0].exc_info[0] is RuntimeError  # type: ignore[index]


async def test_handler_returning_data_off_schema_is_a_500(app: QuartTrio) -> None:
    await error_of(await app.test_client().get("/v1/test/bad-response"), 500, "INTERNAL")


async def test_429_carries_retry_after_seconds(app: QuartTrio) -> None:
    response = await app.test_client().get("/v1/test/busy")
    err = await error_of(response, 429, "LANE_BACKPRESSURE")
    assert err["retryable"] is True and err["retryAfterMs"] == 2500
    assert response.headers["Retry-After"] == "3"  # rounded up, never early


async def test_503_carries_retry_after(app: QuartTrio) -> None:
    response = await app.test_client().get("/v1/test/down")
    err = await error_of(response, 503, "AI_UNAVAILABLE")
    assert err["retryAfterMs"] == 1000 and response.headers["Retry-After"] == "1"


async def test_specific_code_and_details_pass_through(app: QuartTrio) -> None:
    err = await error_of(await app.test_client().get("/v1/test/conflict"), 409, "REQUEST_IN_PROGRESS")
    assert err["details"] == {"requestId": "r1"}


async def test_kernel_backpressure_and_timeouts_map_to_429_and_503(app: QuartTrio) -> None:
    client = app.test_client()
    full = await client.get("/v1/test/full")
    assert (await error_of(full, 429, "RATE_LIMITED"))["retryable"] is True
    assert full.headers["Retry-After"] == "1"
    await error_of(await client.get("/v1/test/slow"), 503, "UNAVAILABLE")


async def test_plain_http_to_a_websocket_route_is_426(app: QuartTrio) -> None:
    response = await app.test_client().get("/v1/ops/telemetry")
    await error_of(response, 426, "UPGRADE_REQUIRED")
    assert response.headers["Upgrade"] == "websocket"


# -- request ids -------------------------------------------------------------------------------------
async def test_request_id_is_echoed_when_valid(app: QuartTrio) -> None:
    response = await app.test_client().get("/health", headers={"X-Request-ID": "client-123:abc"})
    assert response.headers["X-Request-ID"] == "client-123:abc"


async def test_request_id_is_generated_when_missing_or_invalid(app: QuartTrio) -> None:
    client = app.test_client()
    generated = (await client.get("/health")).headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f-]{36}", generated)
    replaced = (await client.get("/health", headers={"X-Request-ID": "bad id\twith spaces"})).headers["X-Request-ID"]
    assert replaced != "bad id\twith spaces" and re.fullmatch(r"[0-9a-f-]{36}", replaced)
    assert (await client.get("/health")).headers["X-Request-ID"] != generated


async def test_error_body_request_id_matches_echoed_header(app: QuartTrio) -> None:
    response = await app.test_client().get("/nope", headers={"X-Request-ID": "trace-42"})
    err = await error_of(response, 404, "NOT_FOUND")
    assert err["requestId"] == "trace-42"


# -- auth --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer"},
    {"Authorization": "Basic YWxpY2U6cHc="},
    {"Authorization": "Bearer not-a-jwt"},
    {"Authorization": "Bearer " + jwt.encode({"sub": "alice", "exp": 4_000_000_000}, "another-secret-" + "0123456789abcdef" * 4, algorithm="HS256")},
    {"Authorization": "Bearer " + jwt.encode({"exp": 4_000_000_000}, SECRET, algorithm="HS256")},
    {"Authorization": "Bearer " + jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256")},
    {"Authorization": "Bearer " + jwt.encode({"sub": "alice", "exp": 4_000_000_000}, SECRET, algorithm="HS512")},
], ids=["missing", "empty", "basic", "garbage", "wrong-secret", "no-sub", "no-exp", "wrong-alg"])
async def test_bad_user_credentials_are_401(app: QuartTrio, headers: dict[str, str]) -> None:
    response = await app.test_client().post("/v1/test/items", headers=headers, json={"metricName": "x", "value": 1})
    await error_of(response, 401, "UNAUTHENTICATED")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_expired_token_is_401(app: QuartTrio) -> None:
    expired = issue_token(SECRET, "alice", ttl_seconds=60, now=1_000_000)
    response = await app.test_client().get("/v1/test/items", headers=bearer(expired))
    err = await error_of(response, 401, "UNAUTHENTICATED")
    assert "expired" in err["message"]


async def test_auth_is_checked_before_the_body(app: QuartTrio) -> None:
    response = await app.test_client().post("/v1/test/items", data=b"{not json",
                                            headers={"Content-Type": "application/json"})
    await error_of(response, 401, "UNAUTHENTICATED")


async def test_the_user_token_is_not_an_ops_token(app: QuartTrio) -> None:
    client = app.test_client()
    await error_of(await client.get("/v1/ops/supervision", headers=user_headers()), 401, "UNAUTHENTICATED")
    await error_of(await client.get("/v1/ops/supervision", headers=bearer(OPS + "x")), 401, "UNAUTHENTICATED")
    assert (await client.get("/v1/ops/supervision", headers=bearer(OPS))).status_code == 200


# -- OpenAPI -----------------------------------------------------------------------------------------
async def test_openapi_lists_every_registered_route(app: QuartTrio) -> None:
    response = await app.test_client().get("/openapi.json")
    assert response.status_code == 200
    doc = await response.get_json()
    assert doc["openapi"].startswith("3.1")
    rules = list(app.url_map.iter_rules())
    assert len(rules) >= 10
    for rule in rules:
        if rule.websocket:  # not an HTTP operation: listed under x-websockets instead
            assert openapi_path(rule.rule) in doc["x-websockets"], f"{rule.rule} is missing from x-websockets"
            assert openapi_path(rule.rule) not in doc["paths"]
            continue
        entry = doc["paths"].get(openapi_path(rule.rule))
        assert entry is not None, f"{rule.rule} is missing from the OpenAPI document"
        for method in set(rule.methods or ()) - {"HEAD", "OPTIONS"}:
            assert method.lower() in entry, f"{method} {rule.rule} is missing from the OpenAPI document"
    # and nothing in the document that the app does not serve
    assert set(doc["paths"]) == {openapi_path(r.rule) for r in rules if not r.websocket}
    assert set(doc["x-websockets"]) == {openapi_path(r.rule) for r in rules if r.websocket}


async def test_openapi_carries_the_models(app: QuartTrio) -> None:
    doc = await (await app.test_client().get("/openapi.json")).get_json()
    op = doc["paths"]["/v1/test/items"]["post"]
    body_ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    item = doc["components"]["schemas"][body_ref.rsplit("/", 1)[-1]]
    assert set(item["properties"]) == {"metricName", "value", "tags"}
    assert op["security"] == [{"userBearer": []}]
    assert {"400", "401", "413", "415", "default"} <= set(op["responses"])
    assert doc["paths"]["/health"]["get"]["security"] == []
    telemetry = doc["x-websockets"]["/v1/ops/telemetry"]
    assert telemetry["security"] == [{"opsBearer": []}] and telemetry["closeCodes"]["4401"]
    assert [p["name"] for p in telemetry["parameters"]] == ["token"]
    get_item = doc["paths"]["/v1/test/items/{item_id}"]["get"]
    assert get_item["parameters"][0] == {"name": "item_id", "in": "path", "required": True,
                                         "schema": {"type": "integer"}}
    assert "ErrorResponse" in doc["components"]["schemas"]


async def test_duplicate_routes_are_refused(app: QuartTrio) -> None:
    system = app_context(app).system
    with pytest.raises(ValueError, match="registered twice"):
        dup = ApiBlueprint("dup")

        @dup.get("/health", auth="none", summary="again")
        async def health_again() -> Any:
            return {}

        create_app(SETTINGS, system=system, blueprints=[dup])


async def test_apps_do_not_share_state(app: QuartTrio) -> None:
    other = create_app(SETTINGS, system=app_context(app).system)
    assert app_context(other).metrics.registry is not app_context(app).metrics.registry
    await app.test_client().get("/health")
    await trio.lowlevel.checkpoint()
    assert list(app_context(other).metrics.request_duration.collect())[0].samples == []


def test_handler_signatures_are_checked_at_registration() -> None:
    api = ApiBlueprint("guarded")
    with pytest.raises(TypeError, match="user_id"):
        @api.get("/a", summary="forgot the user id")
        async def a() -> Any:
            return {}

    with pytest.raises(TypeError, match="item_id"):
        @api.get("/b/<item_id>", auth="none", summary="forgot the path parameter")
        async def b() -> Any:
            return {}

    with pytest.raises(TypeError, match="async"):
        @api.get("/c", auth="none", summary="not async")
        def c() -> Any:
            return {}
