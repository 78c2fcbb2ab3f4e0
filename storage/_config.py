"""Frozen configuration, passed explicitly to :func:`storage.open_store` (no module globals)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from kernel import RetryPolicy, backoff_delay

__all__ = ["Limits", "OutboxPolicy", "RetryPolicy", "StoreConfig", "require_positive", "utc_now"]


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def utc_now() -> datetime:
    """The default wall clock: timezone-aware UTC."""
    return datetime.now(UTC)


def require_positive(owner: str, **values: float) -> None:
    """Refuse, naming ``owner.field``, any of ``values`` that is not a positive finite number
    (shared by the configuration of storage and of coordination)."""
    for name, value in values.items():
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"{owner}.{name} must be a positive finite number, got {value!r}")


def _backoff(attempt: int, base: float, maximum: float, jitter: float, draw: float) -> float:
    # Equal jitter: the delay lies in [d * (1 - jitter), d], so it never collapses to zero
    # and concurrent retriers still spread out. ``attempt`` counts from 1 here and from 0 in
    # the kernel; the exponent stops at 62 as it always has here, which also keeps it finite.
    return backoff_delay(
        min(max(attempt - 1, 0), 62), base_delay=base, max_delay=maximum, jitter=1.0 - jitter * draw
    )


@dataclass(frozen=True, slots=True)
class OutboxPolicy:
    """Outbox leases and retry schedule: ``fail`` reschedules with backoff, then dead-letters."""

    lease_seconds: float = 30.0
    # A claim counts as an attempt; after this many the event goes to 'dead'.
    max_attempts: int = 8
    base_delay: float = 5.0
    max_delay: float = 300.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("OutboxPolicy.max_attempts must be >= 1")
        require_positive(
            "OutboxPolicy",
            lease_seconds=self.lease_seconds,
            base_delay=self.base_delay,
            max_delay=self.max_delay,
        )
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("OutboxPolicy.jitter must be within [0, 1]")

    def delay(self, attempts: int, draw: float) -> float:
        """Seconds before the next try of an event that has failed ``attempts`` times;
        ``draw`` in [0, 1) comes from the store's seeded RNG."""
        return _backoff(attempts, self.base_delay, self.max_delay, self.jitter, draw)


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits enforced before anything is written (refused with InvalidData)."""

    max_id_chars: int = 256  # user, source, record, request, device, entity ids, handler names
    max_name_chars: int = 64  # metric, unit, event and entity types, statuses
    max_json_chars: int = 256 * 1024  # any JSON document (metadata, payloads, entity data)
    # A stored answer to a request (replayed as it was): an upload of 5,000 items may reject every
    # one with a message, ~1.5 MB of JSON at worst.
    max_result_chars: int = 4 * 1024 * 1024
    max_error_chars: int = 4096  # stored error texts are truncated, not refused
    max_batch_rows: int = 10_000

    def __post_init__(self) -> None:
        for name in ("max_id_chars", "max_name_chars", "max_json_chars", "max_result_chars", "max_error_chars",
                     "max_batch_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"Limits.{name} must be >= 1")


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Everything a store needs besides its URL."""

    # Reruns of a unit of work after a transient error (kernel.retry_call: full jitter). The database states
    # its own numbers: serialization failures under contention want quick, several retries.
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(attempts=5, initial=0.02, cap=1.0))
    outbox: OutboxPolicy = field(default_factory=OutboxPolicy)
    limits: Limits = field(default_factory=Limits)
    checkpoint_lease_seconds: float = 60.0
    # Seeds the jitter of retries and outbox backoff; None draws a fresh seed.
    seed: int | None = None
    # Wall clock for stored timestamps and lease expiry (leases are compared across processes,
    # so trio's monotonic clock cannot serve). Tests inject storage.testing.ManualClock.
    clock: Callable[[], datetime] = utc_now
    # Migrate on open. SQLite always does; for PostgreSQL set False to require `migrate()`.
    migrate_on_open: bool = True
    # SQLite. FULL fsyncs the WAL on every commit: a commit survives SIGKILL and power loss.
    # NORMAL survives SIGKILL of the process too (the WAL is written before COMMIT returns) but
    # may lose the last commits on power loss.
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    sqlite_busy_timeout_ms: int = 5000
    # PostgreSQL. ``pg_schema`` is created if missing and put first on the search_path.
    pg_schema: str | None = None
    pg_min_size: int = 1
    pg_max_size: int = 10
    # Session advisory locks hold a connection each; a pool of their own means lock holders
    # can never starve (or deadlock) transactions waiting for a connection.
    pg_lock_pool_size: int = 8
    pg_application_name: str = "vigil"  # shown in pg_stat_activity
    pg_connect_timeout: float = 5.0
    pg_command_timeout: float | None = 30.0
    # close() waits this long for connections in use to come back, then terminates them: a connection held by a
    # cancelled task mid-transaction must not hang shutdown.
    pg_close_timeout: float = 5.0
    # NOTIFY channel of outbox enqueues (the schema name is appended when set).
    notify_channel: str = "vigil_outbox"

    def __post_init__(self) -> None:
        require_positive(
            "StoreConfig",
            checkpoint_lease_seconds=self.checkpoint_lease_seconds,
            pg_connect_timeout=self.pg_connect_timeout,
            pg_close_timeout=self.pg_close_timeout,
        )
        if self.pg_min_size < 0 or self.pg_max_size < max(1, self.pg_min_size) or self.pg_lock_pool_size < 1:
            raise ValueError("StoreConfig pool sizes must satisfy 0 <= min <= max, max >= 1, lock pool >= 1")
        if self.sqlite_synchronous not in ("FULL", "NORMAL"):
            raise ValueError("StoreConfig.sqlite_synchronous must be 'FULL' or 'NORMAL'")
        if self.pg_schema is not None and not _IDENTIFIER.fullmatch(self.pg_schema):
            raise ValueError("StoreConfig.pg_schema must be a plain SQL identifier ([A-Za-z_][A-Za-z0-9_]*)")
