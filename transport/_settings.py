"""Process configuration: one frozen value, read from the environment once, at startup.

Secrets have clearly named development defaults so that `make run` works on a fresh clone; in
production mode (``VIGIL_ENV=production``) a missing or weak secret is a startup error instead.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

# Development-only secrets: long enough for HS256 (pyjwt warns below 32 bytes), named so that
# nobody mistakes them for real ones when they show up in a log or a token.
DEV_JWT_SECRET = "vigil-dev-insecure-jwt-secret-do-not-use-in-production"
DEV_OPS_TOKEN = "vigil-dev-insecure-ops-token-do-not-use-in-production"

MIN_SECRET_BYTES = 32  # RFC 7518 §3.2: an HS256 key at least as long as the hash
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_ENVIRONMENTS = {"": False, "development": False, "dev": False, "test": False, "production": True}


class ConfigError(ValueError):
    """The configuration cannot start a server; the message says which setting and why."""


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    database_url: str = "sqlite:///./data/vigil.db"
    redis_url: str | None = None
    jwt_secret: str = DEV_JWT_SECRET
    ops_token: str = DEV_OPS_TOKEN
    production: bool = False
    max_body_bytes: int = 5 * 1024 * 1024
    # Worker processes that decode uploads (0: in the server process); None: one per core, at most 4.
    decode_processes: int | None = None
    # What this process runs (run.py serve --role): "web" HTTP and WebSocket, "worker" the outbox dispatcher,
    # projections and reapers, "all" both.
    role: Literal["all", "web", "worker"] = "all"
    # A worker process lowers its CPU priority by this much (nice), so web processes sharing its machine keep
    # their latency while it projects flat out; 0 leaves it alone.
    worker_nice: int = 10
    log_level: str = "INFO"
    # How long in-flight HTTP requests and WebSockets get to finish after a shutdown signal.
    drain_timeout: float = 10.0
    # Per-check budget of GET /health, so one hung dependency cannot hang the probe.
    health_check_timeout: float = 2.0
    # Requests per sliding minute on the user routes, per user and per client IP; 0 turns a limit off.
    rate_limit_user_per_min: int = 600
    rate_limit_ip_per_min: int = 1200
    # SIGTERM to exit, everything included (HTTP drain, lanes, outbox work, leases, pools): inside the
    # usual 30 s SIGTERM -> SIGKILL window of a service manager.
    shutdown_timeout: float = 25.0
    # The AI weekly report (Anthropic): no key, no reports (503 AI_UNAVAILABLE); None base URL and model:
    # Anthropic's API and the AI domain's default model.
    anthropic_api_key: str | None = None
    anthropic_base_url: str | None = None
    anthropic_model: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be in 0..65535, got {self.port}")
        if self.max_body_bytes <= 0:
            raise ConfigError(f"max_body_bytes must be positive, got {self.max_body_bytes}")
        if self.log_level.upper() not in _LOG_LEVELS:
            raise ConfigError(f"log level must be one of {', '.join(_LOG_LEVELS)}, got {self.log_level!r}")
        if self.decode_processes is not None and not 0 <= self.decode_processes <= 64:
            raise ConfigError(f"decode_processes must be 0..64, got {self.decode_processes}")
        if not 0 <= self.worker_nice <= 19:
            raise ConfigError(f"worker_nice must be 0..19, got {self.worker_nice}")
        if self.role not in ("all", "web", "worker"):
            raise ConfigError(f"role must be one of all, web, worker; got {self.role!r}")
        if self.drain_timeout < 0 or self.health_check_timeout <= 0:
            raise ConfigError("drain_timeout must be >= 0 and health_check_timeout > 0")
        if self.rate_limit_user_per_min < 0 or self.rate_limit_ip_per_min < 0:
            raise ConfigError("rate limits must be >= 0 (0 turns a limit off)")
        if not 1.0 <= self.shutdown_timeout <= 3600:
            raise ConfigError(f"shutdown_timeout must be 1..3600 seconds, got {self.shutdown_timeout}")
        if self.production:
            for name, env, dev in (("jwt_secret", "VIGIL_JWT_SECRET", DEV_JWT_SECRET),
                                   ("ops_token", "VIGIL_OPS_TOKEN", DEV_OPS_TOKEN)):
                value: str = getattr(self, name)
                if not value or value == dev:
                    raise ConfigError(f"{env} must be set when VIGIL_ENV=production "
                                      f"(the development default is refused)")
                if len(value.encode()) < MIN_SECRET_BYTES:
                    raise ConfigError(f"{env} must be at least {MIN_SECRET_BYTES} bytes in production, "
                                      f"got {len(value.encode())}")
        elif not self.jwt_secret or not self.ops_token:
            raise ConfigError("jwt_secret and ops_token must not be empty")

    def __repr__(self) -> str:
        # Secrets never reach a log through repr; a URL's password neither.
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        shown["jwt_secret"] = shown["ops_token"] = "<redacted>"
        if shown["anthropic_api_key"]:
            shown["anthropic_api_key"] = "<redacted>"
        for name in ("database_url", "redis_url"):
            if shown[name]:
                shown[name] = _redact_url(shown[name])
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"

    @property
    def dev_defaults_in_use(self) -> tuple[str, ...]:
        """Names of the secrets still at their development default (logged as a warning)."""
        return tuple(name for name, dev in (("jwt_secret", DEV_JWT_SECRET), ("ops_token", DEV_OPS_TOKEN))
                     if getattr(self, name) == dev)

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> Settings:
        """Read ``VIGIL_*`` variables; ``overrides`` (e.g. CLI flags) win, and a ``None`` override is
        ignored so that unset flags can be passed straight through."""
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")

        env_name = environ.get("VIGIL_ENV", "").strip().lower()
        if env_name not in _ENVIRONMENTS:
            # A typo such as "prod" must not silently start with development secrets.
            raise ConfigError(f"VIGIL_ENV must be one of production, development, test; got {env_name!r}")

        values: dict[str, Any] = {"production": _ENVIRONMENTS[env_name]}
        for name, var, parse in (
            ("host", "VIGIL_HOST", str),
            ("port", "VIGIL_PORT", _int("VIGIL_PORT")),
            ("database_url", "VIGIL_DATABASE_URL", str),
            ("redis_url", "VIGIL_REDIS_URL", str),
            ("jwt_secret", "VIGIL_JWT_SECRET", str),
            ("ops_token", "VIGIL_OPS_TOKEN", str),
            ("max_body_bytes", "VIGIL_MAX_BODY_BYTES", _int("VIGIL_MAX_BODY_BYTES")),
            ("decode_processes", "VIGIL_DECODE_PROCESSES", _int("VIGIL_DECODE_PROCESSES")),
            ("role", "VIGIL_ROLE", str),
            ("worker_nice", "VIGIL_WORKER_NICE", _int("VIGIL_WORKER_NICE")),
            ("log_level", "VIGIL_LOG_LEVEL", str),
            ("rate_limit_user_per_min", "VIGIL_RATE_LIMIT_USER_PER_MIN", _int("VIGIL_RATE_LIMIT_USER_PER_MIN")),
            ("rate_limit_ip_per_min", "VIGIL_RATE_LIMIT_IP_PER_MIN", _int("VIGIL_RATE_LIMIT_IP_PER_MIN")),
            ("shutdown_timeout", "VIGIL_SHUTDOWN_TIMEOUT", _float("VIGIL_SHUTDOWN_TIMEOUT")),
            ("anthropic_api_key", "VIGIL_ANTHROPIC_API_KEY", str),
            ("anthropic_base_url", "VIGIL_ANTHROPIC_BASE_URL", str),
            ("anthropic_model", "VIGIL_ANTHROPIC_MODEL", str),
        ):
            raw = environ.get(var)
            if raw is not None and raw.strip() != "":
                values[name] = parse(raw.strip())
        if values["production"]:
            # No fallback to the dev defaults: __post_init__ names the missing variable.
            values.setdefault("jwt_secret", "")
            values.setdefault("ops_token", "")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **changes)


def _int(var: str) -> Any:
    def parse(raw: str) -> int:
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{var} must be an integer, got {raw!r}") from None
    return parse


def _float(var: str) -> Any:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{var} must be a number of seconds, got {raw!r}") from None
        if value != value:  # NaN
            raise ConfigError(f"{var} must be a number of seconds, got {raw!r}")
        return value
    return parse


def warn_about_dev_defaults(settings: Settings, logger: logging.Logger) -> None:
    for name in settings.dev_defaults_in_use:
        logger.warning("using the development default for %s; set VIGIL_%s for anything but local use",
                       name, name.upper(), extra={"fields": {"setting": name}})


def _redact_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"


__all__ = ["DEV_JWT_SECRET", "DEV_OPS_TOKEN", "ConfigError", "Settings", "warn_about_dev_defaults"]
