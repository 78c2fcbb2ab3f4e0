"""Settings from the environment, tokens, and the structured log format."""

from __future__ import annotations

import io
import json
import logging

import pytest

from transport import (
    DEV_JWT_SECRET,
    DEV_OPS_TOKEN,
    ConfigError,
    JsonFormatter,
    Settings,
    Unauthenticated,
    bearer_token,
    issue_token,
    verify_user_token,
)

STRONG = "s" * 40


def test_defaults_are_the_documented_ones() -> None:
    s = Settings.from_env({})
    assert (s.host, s.port, s.database_url, s.redis_url) == ("127.0.0.1", 8000, "sqlite:///./data/vigil.db", None)
    assert s.max_body_bytes == 5 * 1024 * 1024 and s.production is False
    assert s.dev_defaults_in_use == ("jwt_secret", "ops_token")


def test_environment_is_read_and_overrides_win() -> None:
    env = {"VIGIL_HOST": "0.0.0.0", "VIGIL_PORT": "9000", "VIGIL_DATABASE_URL": "postgresql://db/vigil",
           "VIGIL_REDIS_URL": "redis://r:6379/0", "VIGIL_JWT_SECRET": STRONG, "VIGIL_OPS_TOKEN": STRONG}
    s = Settings.from_env(env, port=9100, redis_url=None)  # a None override (an unset flag) is ignored
    assert (s.host, s.port, s.database_url, s.redis_url) == ("0.0.0.0", 9100, "postgresql://db/vigil", "redis://r:6379/0")
    assert s.dev_defaults_in_use == ()


@pytest.mark.parametrize("env, message", [
    ({"VIGIL_ENV": "production", "VIGIL_OPS_TOKEN": STRONG}, "VIGIL_JWT_SECRET must be set"),
    ({"VIGIL_ENV": "production", "VIGIL_JWT_SECRET": STRONG}, "VIGIL_OPS_TOKEN must be set"),
    ({"VIGIL_ENV": "production", "VIGIL_JWT_SECRET": DEV_JWT_SECRET, "VIGIL_OPS_TOKEN": STRONG}, "VIGIL_JWT_SECRET"),
    ({"VIGIL_ENV": "production", "VIGIL_JWT_SECRET": "short", "VIGIL_OPS_TOKEN": STRONG}, "at least 32 bytes"),
    ({"VIGIL_ENV": "prod"}, "VIGIL_ENV must be one of"),
    ({"VIGIL_PORT": "eighty"}, "VIGIL_PORT must be an integer"),
    ({"VIGIL_PORT": "70000"}, "port must be in"),
    ({"VIGIL_LOG_LEVEL": "chatty"}, "log level"),
    ({"VIGIL_ROLE": "reader"}, "role must be one of all, web, worker"),
    ({"VIGIL_WORKER_NICE": "20"}, "worker_nice must be 0..19"),
])
def test_bad_configuration_is_a_clear_config_error(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_role_and_worker_nice_from_the_environment() -> None:
    s = Settings.from_env({"VIGIL_ROLE": "worker", "VIGIL_WORKER_NICE": "5"})
    assert (s.role, s.worker_nice) == ("worker", 5)
    assert (Settings().role, Settings().worker_nice) == ("all", 10)


def test_production_with_real_secrets_starts() -> None:
    s = Settings.from_env({"VIGIL_ENV": "production", "VIGIL_JWT_SECRET": STRONG, "VIGIL_OPS_TOKEN": "o" * 32})
    assert s.production and s.dev_defaults_in_use == ()


def test_repr_never_shows_secrets() -> None:
    s = Settings(jwt_secret=STRONG, ops_token="o" * 40, database_url="postgresql://vigil:hunter2@db/vigil")
    text = repr(s)
    assert STRONG not in text and "o" * 40 not in text and "hunter2" not in text
    assert "postgresql://vigil:***@db/vigil" in text
    assert DEV_OPS_TOKEN not in repr(Settings())


def test_settings_are_frozen() -> None:
    with pytest.raises(AttributeError):
        Settings().port = 1  # type: ignore[misc]


def test_tokens_round_trip_and_expire() -> None:
    token = issue_token(STRONG, "user-1")
    assert verify_user_token(STRONG, token) == "user-1"
    with pytest.raises(Unauthenticated, match="expired"):
        verify_user_token(STRONG, issue_token(STRONG, "user-1", ttl_seconds=1, now=1_000_000))
    with pytest.raises(Unauthenticated):
        verify_user_token("x" * 40, token)
    with pytest.raises(ValueError):
        issue_token(STRONG, "")


@pytest.mark.parametrize("header, token", [
    ("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("Bearer", None), ("Basic abc", None), (None, None), ("", None),
])
def test_bearer_token_parsing(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def test_json_log_lines_carry_fields_and_exceptions() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("vigil.test.json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("request", extra={"fields": {"status": 500, "requestId": "r-1"}})
        try:
            raise KeyError("k")
        except KeyError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["msg"] == "request" and first["status"] == 500 and first["requestId"] == "r-1"
    assert first["level"] == "warning" and first["ts"].endswith("Z")
    assert "KeyError" in second["exc"]
