"""Frozen configuration passed explicitly to :func:`open_coordination`."""

from __future__ import annotations

from dataclasses import dataclass, field

from .._config import require_positive

__all__ = ["BusConfig", "CoordinationConfig", "RedisConfig"]


@dataclass(frozen=True, slots=True)
class BusConfig:
    """Pub/sub tuning, shared by both implementations."""

    # Messages buffered per subscriber before new ones are dropped (and counted).
    subscriber_buffer: int = 256
    # How long subscribe() waits for Redis to confirm SUBSCRIBE/PSUBSCRIBE.
    subscribe_timeout: float = 2.0
    # Most messages the Redis listener takes per bridge crossing.
    listener_batch: int = 256
    # Reconnect backoff of the Redis listener (exponential with jitter, capped).
    reconnect_backoff_min: float = 0.05
    reconnect_backoff_max: float = 5.0
    # After this much silence the Redis listener PINGs over its connection; a second
    # silent interval means a half-open socket, so it reconnects (TCP keepalive alone
    # takes hours to notice).
    listener_idle_ping: float = 15.0

    def __post_init__(self) -> None:
        if self.subscriber_buffer < 1 or self.listener_batch < 1:
            raise ValueError("BusConfig.subscriber_buffer and listener_batch must be >= 1")
        require_positive(
            "BusConfig",
            subscribe_timeout=self.subscribe_timeout,
            reconnect_backoff_min=self.reconnect_backoff_min,
            reconnect_backoff_max=self.reconnect_backoff_max,
            listener_idle_ping=self.listener_idle_ping,
        )
        if self.reconnect_backoff_max < self.reconnect_backoff_min:
            raise ValueError("BusConfig.reconnect_backoff_max must be >= reconnect_backoff_min")


@dataclass(frozen=True, slots=True)
class RedisConfig:
    """Redis connection settings; ignored by the in-process implementation."""

    # Prepended to every key and channel so deployments/tests can share one Redis.
    key_prefix: str = "vigil:"
    connect_timeout: float = 1.0
    # Socket timeout for one command; a dead server surfaces as CoordinationUnavailable.
    command_timeout: float = 1.0
    # Retries of an idempotent command (lease scripts, PING, SUBSCRIBE) while Redis is unavailable, when
    # open_coordination has no Dependency (whose RetryPolicy then decides): one retry hides a stale pooled
    # connection. Rate-limit hits and PUBLISH are never retried (see _redis.py).
    retries: int = 1
    max_connections: int = 64
    health_timeout: float = 1.0

    def __post_init__(self) -> None:
        if self.retries < 0 or self.max_connections < 1:
            raise ValueError("RedisConfig.retries must be >= 0 and max_connections >= 1")
        require_positive(
            "RedisConfig",
            connect_timeout=self.connect_timeout,
            command_timeout=self.command_timeout,
            health_timeout=self.health_timeout,
        )

    @property
    def operation_deadline(self) -> float:
        """Hard trio-side bound for one attempt of an operation (backstop: redis-py's own timeouts
        normally fire first): pool wait, connect, command."""
        return self.command_timeout + self.connect_timeout + self.command_timeout + 0.5


@dataclass(frozen=True, slots=True)
class CoordinationConfig:
    """Everything :func:`open_coordination` needs besides the URL."""

    redis: RedisConfig = field(default_factory=RedisConfig)
    bus: BusConfig = field(default_factory=BusConfig)
    # How often (trio time) the in-process rate limiter/leases purge idle entries.
    local_sweep_interval: float = 60.0
    # Seed of the single random source (reconnect jitter); None = OS entropy.
    seed: int | None = None

    def __post_init__(self) -> None:
        require_positive("CoordinationConfig", local_sweep_interval=self.local_sweep_interval)
