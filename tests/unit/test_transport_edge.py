"""API.md "Conventions" at the edge: rate limits per user and per IP (429 RATE_LIMITED, Retry-After and
RateLimit-* headers), Server-Time on every response, gzip request bodies limited on their inflated size,
and /health's version and timestamp. Over HTTP through Quart's test client, on a MockClock."""

from __future__ import annotations

import gzip
import logging
import re
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
import trio
import trio.testing
from quart_trio import QuartTrio

from kernel import ActorSystem, ChildSpec, Supervisor
from storage.coordination import CoordinationConfig, CoordinationUnavailable, RateDecision, open_coordination
from tests.unit.test_transport_app import (
    OPS,
    SECRET,
    SETTINGS,
    Echo,
    bearer,
    error_of,
    sample_blueprint,
    user_headers,
)
from transport import Settings, create_app
from transport._routes import inflate_gzip

ITEMS = "/v1/test/items"
ITEM = {"metricName": "steps", "value": 1.0, "tags": ["a"]}
SERVER_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


async def limited_app(settings: Settings, limiter: Any) -> AsyncIterator[QuartTrio]:
    tree = Supervisor("root", children=[ChildSpec("echo", Echo)])
    async with ActorSystem.start(tree, seed=1) as system:
        yield create_app(settings, system=system, blueprints=[sample_blueprint()], rate_limiter=limiter)


@pytest.fixture
async def app() -> AsyncIterator[QuartTrio]:
    settings = SETTINGS.with_overrides(rate_limit_user_per_min=3, rate_limit_ip_per_min=5)
    async with open_coordination(None, config=CoordinationConfig()) as coordination:
        async for app in limited_app(settings, coordination.limiter):
            yield app


def from_ip(ip: str) -> dict[str, Any]:
    return {"scope_base": {"client": (ip, 40000)}}


async def get_items(app: QuartTrio, user: str = "alice", ip: str = "10.0.0.1") -> Any:
    return await app.test_client().get(ITEMS, headers=user_headers(user), **from_ip(ip))


def quota(response: Any) -> tuple[int, int, int]:
    h = response.headers
    return int(h["RateLimit-Limit"]), int(h["RateLimit-Remaining"]), int(h["RateLimit-Reset"])


# -- rate limits ---------------------------------------------------------------------------------------
async def test_user_limit_answers_429_with_headers_then_recovers(autojump_clock: trio.testing.MockClock, app: QuartTrio) -> None:
    seen = []
    for _ in range(3):
        response = await get_items(app)
        assert response.status_code == 200
        seen.append(quota(response))
    assert [(limit, remaining) for limit, remaining, _ in seen] == [(3, 2), (3, 1), (3, 0)]
    assert all(0 < reset <= 60 for _, _, reset in seen)

    response = await get_items(app)
    err = await error_of(response, 429, "RATE_LIMITED")
    assert err["retryable"] is True and 0 < err["retryAfterMs"] <= 60_000
    assert err["details"] == {"scope": "user", "limit": 3, "windowSeconds": 60.0}
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert quota(response)[:2] == (3, 0)

    # Another user from another IP is not affected; the sliding window lets alice in after Retry-After.
    assert (await get_items(app, "bob", ip="10.0.0.2")).status_code == 200
    await trio.sleep(err["retryAfterMs"] / 1000)
    response = await get_items(app)
    assert response.status_code == 200 and quota(response)[1] == 2  # the three hits of t=0 left together


async def test_ip_limit_counts_every_user_and_bad_tokens(autojump_clock: trio.testing.MockClock, app: QuartTrio) -> None:
    client = app.test_client()
    for user in ("u1", "u2", "u3"):
        assert (await get_items(app, user)).status_code == 200
    # A bad token is counted against its IP before it is refused.
    response = await client.get(ITEMS, headers=bearer("not-a-jwt"), **from_ip("10.0.0.1"))
    await error_of(response, 401, "UNAUTHENTICATED")
    assert quota(response)[:2] == (5, 1)
    assert (await get_items(app, "u4")).status_code == 200
    err = await error_of(await get_items(app, "u5"), 429, "RATE_LIMITED")
    assert err["details"]["scope"] == "ip"
    assert (await get_items(app, "u5", ip="10.0.0.9")).status_code == 200


async def test_operator_and_public_routes_are_not_limited(autojump_clock: trio.testing.MockClock, app: QuartTrio) -> None:
    client = app.test_client()
    for _ in range(8):
        health = await client.get("/health", **from_ip("10.0.0.1"))
        metrics = await client.get("/metrics", headers=bearer(OPS), **from_ip("10.0.0.1"))
        assert (health.status_code, metrics.status_code) == (200, 200)
        assert "RateLimit-Limit" not in health.headers and "RateLimit-Limit" not in metrics.headers


async def test_zero_turns_a_limit_off(autojump_clock: trio.testing.MockClock) -> None:
    settings = SETTINGS.with_overrides(rate_limit_user_per_min=0, rate_limit_ip_per_min=0)
    async with open_coordination(None, config=CoordinationConfig()) as coordination:
        async for app in limited_app(settings, coordination.limiter):
            for _ in range(20):
                response = await get_items(app)
                assert response.status_code == 200 and "RateLimit-Limit" not in response.headers


class BrokenLimiter:
    calls = 0

    async def hit(self, key: str, *, limit: int, window: float) -> RateDecision:
        raise AssertionError("transport makes one hit_all call per request")

    async def hit_all(self, hits: Sequence[tuple[str, int]], *, window: float) -> tuple[RateDecision, ...]:
        self.calls += 1
        raise CoordinationUnavailable("redis unavailable: ConnectionError")


async def test_a_failing_limiter_fails_open_and_logs(autojump_clock: trio.testing.MockClock,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    limiter = BrokenLimiter()
    settings = SETTINGS.with_overrides(rate_limit_user_per_min=1, rate_limit_ip_per_min=1)
    with caplog.at_level(logging.WARNING, logger="vigil.transport.limits"):
        async for app in limited_app(settings, limiter):
            for _ in range(5):
                assert (await get_items(app)).status_code == 200
    assert limiter.calls == 5  # IP and user in one call, every request
    warnings = [r for r in caplog.records if r.name == "vigil.transport.limits"]
    assert len(warnings) == 1 and "letting requests through" in warnings[0].getMessage()  # throttled


# -- Server-Time and /health ----------------------------------------------------------------------------
async def test_server_time_on_every_response(autojump_clock: trio.testing.MockClock, app: QuartTrio) -> None:
    client = app.test_client()
    responses = [await client.get("/health"), await client.get("/nowhere"), await get_items(app),
                 await client.get(ITEMS), await client.get("/v1/test/boom"),
                 await client.post(ITEMS, data=b"{", headers={**user_headers(), "Content-Type": "application/json"})]
    assert [r.status_code for r in responses] == [200, 404, 200, 401, 500, 400]
    for response in responses:
        stamp = response.headers["Server-Time"]
        assert SERVER_TIME.fullmatch(stamp), stamp
        parsed = time.mktime(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
        assert abs(parsed - time.time()) < 120


async def test_health_has_version_and_timestamp(autojump_clock: trio.testing.MockClock, app: QuartTrio) -> None:
    body = await (await app.test_client().get("/health")).get_json()
    assert body["version"] == "0.1.0"
    assert SERVER_TIME.fullmatch(body["timestamp"])
    assert {"status", "checks", "circuitBreakers"} <= set(body)


# -- gzip request bodies -----------------------------------------------------------------------------------
def gz_headers(**extra: str) -> dict[str, str]:
    return {**user_headers(), "Content-Type": "application/json", "Content-Encoding": "gzip", **extra}


async def test_gzip_body_is_inflated(autojump_clock: trio.testing.MockClock, app: QuartTrio) -> None:
    body = b'{"metricName": "steps", "value": 2, "tags": ["x", "y"]}'
    response = await app.test_client().post(ITEMS, data=gzip.compress(body), headers=gz_headers())
    assert response.status_code == 200, await response.get_data()
    assert (await response.get_json())["count"] == 2
    # Two concatenated members are one body (RFC 1952).
    halves = gzip.compress(body[:20]) + gzip.compress(body[20:])
    assert (await app.test_client().post(ITEMS, data=halves, headers=gz_headers())).status_code == 200


async def test_the_limit_applies_to_the_inflated_body(autojump_clock: trio.testing.MockClock, app: QuartTrio) -> None:
    padded = b'{"metricName": "steps", "value": 2, "tags": ["' + b"a" * 2000 + b'"]}'
    compressed = gzip.compress(padded)
    assert len(compressed) < SETTINGS.max_body_bytes < len(padded)
    err = await error_of(await app.test_client().post(ITEMS, data=compressed, headers=gz_headers()),
                         413, "PAYLOAD_TOO_LARGE")
    assert err["details"] == {"maxBytes": SETTINGS.max_body_bytes}


async def test_a_gzip_bomb_gets_413(autojump_clock: trio.testing.MockClock) -> None:
    bomb = gzip.compress(b"\0" * (256 * 1024 * 1024), compresslevel=9)  # 256 MiB of zeros in ~250 KB
    settings = SETTINGS.with_overrides(max_body_bytes=1024 * 1024)
    async for app in limited_app(settings, None):
        response = await app.test_client().post(ITEMS, data=bomb, headers=gz_headers())
        await error_of(response, 413, "PAYLOAD_TOO_LARGE")


def test_inflate_stops_at_the_limit() -> None:
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024))
    with pytest.raises(Exception) as info:
        inflate_gzip(bomb, 1000)
    assert type(info.value).__name__ == "PayloadTooLarge"
    assert inflate_gzip(gzip.compress(b"x" * 1000), 1000) == b"x" * 1000  # exactly the limit passes


@pytest.mark.parametrize("data, encoding, status, code", [
    (b"not gzip at all", "gzip", 400, "VALIDATION_ERROR"),
    (gzip.compress(b'{"metricName": "a", "value": 1}', mtime=0)[:-12], "gzip", 400, "VALIDATION_ERROR"),  # truncated
    (b'{"metricName": "a", "value": 1}', "br", 415, "UNSUPPORTED_MEDIA_TYPE"),
])
async def test_bad_encodings_are_client_errors(autojump_clock: trio.testing.MockClock, app: QuartTrio, data: bytes, encoding: str, status: int,
                                               code: str) -> None:
    response = await app.test_client().post(ITEMS, data=data, headers=gz_headers(**{"Content-Encoding": encoding}))
    await error_of(response, status, code)


def test_settings_read_the_limits_and_the_shutdown_budget() -> None:
    env = {"VIGIL_RATE_LIMIT_USER_PER_MIN": "0", "VIGIL_RATE_LIMIT_IP_PER_MIN": "77", "VIGIL_SHUTDOWN_TIMEOUT": "12.5",
           "VIGIL_JWT_SECRET": SECRET}
    settings = Settings.from_env(env)
    assert (settings.rate_limit_user_per_min, settings.rate_limit_ip_per_min) == (0, 77)
    assert settings.shutdown_timeout == 12.5
    defaults = Settings()
    assert (defaults.rate_limit_user_per_min, defaults.rate_limit_ip_per_min, defaults.shutdown_timeout) == \
        (600, 1200, 25.0)
