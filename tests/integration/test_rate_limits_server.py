"""Rate limits over a socket, on ``run.py serve`` with Redis: two server processes share one sliding window per
user (the limiter's state is in Redis), and with Redis gone the limits fail open — requests keep being answered,
never a 5xx."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import httpx
import pytest

from tests.ingest_helpers import headers, running_server
from tests.integration import test_coordination_redis as coordination_tests
from tests.integration.test_coordination_redis import REDIS_URL, PrivateRedis, require_redis

private_redis = coordination_tests.private_redis  # a fixture: a throwaway redis-server

SETTINGS_PATH = "/v1/users/me/settings"
SERVER_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def limited(redis_url: str, per_user: int) -> dict[str, str]:
    # The IP limit stays off: every test process on this machine shares 127.0.0.1 and this Redis.
    return {"VIGIL_REDIS_URL": redis_url, "VIGIL_RATE_LIMIT_USER_PER_MIN": str(per_user),
            "VIGIL_RATE_LIMIT_IP_PER_MIN": "0"}


@pytest.mark.slow
@pytest.mark.redis
async def test_two_processes_share_the_user_limit_through_redis(tmp_path: Path) -> None:
    require_redis()
    user = f"rl-{uuid.uuid4().hex}"  # a key of its own in the shared Redis
    env = limited(REDIS_URL, 4)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with running_server(tmp_path / "a", env=env) as a, running_server(tmp_path / "b", env=env) as b:
        async with httpx.AsyncClient(timeout=30) as client:
            remaining = []
            for server in (a, b, a, b):
                r = await client.get(server.base + SETTINGS_PATH, headers=headers(user))
                assert r.status_code == 200, r.text
                assert r.headers["RateLimit-Limit"] == "4" and 0 < int(r.headers["RateLimit-Reset"]) <= 60
                remaining.append(int(r.headers["RateLimit-Remaining"]))
            assert remaining == [3, 2, 1, 0]
            for server in (a, b):
                r = await client.get(server.base + SETTINGS_PATH, headers=headers(user))
                assert r.status_code == 429, r.text
                error = r.json()["error"]
                assert error["code"] == "RATE_LIMITED" and error["retryable"] is True
                assert 1 <= int(r.headers["Retry-After"]) <= 60
                assert r.headers["RateLimit-Remaining"] == "0" and SERVER_TIME.fullmatch(r.headers["Server-Time"])
            other = await client.get(a.base + SETTINGS_PATH, headers=headers(user + "-other"))
            assert other.status_code == 200
            health = (await client.get(a.base + "/health")).json()
            assert health["version"] and SERVER_TIME.fullmatch(health["timestamp"])
        # Clients closed first: an idle keep-alive would hold the drain.
        assert await a.terminate() == 0 and await b.terminate() == 0


@pytest.mark.slow
async def test_limits_fail_open_when_redis_dies(tmp_path: Path, private_redis: PrivateRedis) -> None:
    async with running_server(tmp_path, env=limited(private_redis.url, 3)) as server:
        async with httpx.AsyncClient(base_url=server.base, timeout=30) as client:
            for _ in range(3):
                assert (await client.get(SETTINGS_PATH, headers=headers("u"))).status_code == 200
            assert (await client.get(SETTINGS_PATH, headers=headers("u"))).status_code == 429
            private_redis.kill()
            for _ in range(5):  # the limiter cannot answer: requests go through, without RateLimit headers
                r = await client.get(SETTINGS_PATH, headers=headers("u"))
                assert r.status_code == 200, r.text
                assert "RateLimit-Limit" not in r.headers
            health = await client.get("/health")
            assert health.status_code == 200 and health.json()["status"] == "degraded"
        assert "letting requests through" in server.log_text()
        assert await server.terminate() == 0
