"""Versioned schema migrations, one ordered list per backend.

A migration is applied once, in its own transaction, and recorded in ``schema_migrations``.
Never edit a released migration: append a new one. Which ones a database still needs is decided
here (:func:`pending_migrations`); each backend only reads and records versions.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import NamedTuple

from .._errors import StoreError

__all__ = [
    "CHECKPOINT_INDEXES",
    "COMPLETE_UNFINISHED_DUPLICATES",
    "Migration",
    "check_sequence",
    "pending_migrations",
]

# Statements both dialects' migration 2 share (plain SQL that reads the same in both).
COMPLETE_UNFINISHED_DUPLICATES = (
    "UPDATE outbox_events SET status = 'completed', lease_owner = NULL, lease_expires_at = NULL,"
    " last_error = 'content duplicate of an earlier unfinished event (migration 2)'"
    " WHERE status IN ('pending', 'processing') AND EXISTS (SELECT 1 FROM outbox_events AS o"
    " WHERE o.event_hash = outbox_events.event_hash AND o.status IN ('pending', 'processing')"
    " AND o.id < outbox_events.id)"
)
# Each serves one question the read side asks often; partial, so finished rows cost nothing.
CHECKPOINT_INDEXES = (
    # claim: due work per handler, oldest due first
    "CREATE INDEX projection_checkpoints_due ON projection_checkpoints (handler, next_attempt_at, event_id)"
    " WHERE status IN ('pending', 'failed')",
    # claim: a crashed holder's expired leases
    "CREATE INDEX projection_checkpoints_leased ON projection_checkpoints (handler, lease_expires_at)"
    " WHERE status = 'processing'",
    # state(): a user's unfinished work per handler (freshness on every read)
    "CREATE INDEX projection_checkpoints_unfinished ON projection_checkpoints (user_id, handler)"
    " WHERE status <> 'completed'",
    # list_dead: keyset by (event_id, handler)
    "CREATE INDEX projection_checkpoints_dead ON projection_checkpoints (event_id, handler)"
    " WHERE status = 'dead'",
    # purge_completed
    "CREATE INDEX projection_checkpoints_completed ON projection_checkpoints (updated_at)"
    " WHERE status = 'completed'",
)


class Migration(NamedTuple):
    version: int
    name: str
    statements: tuple[str, ...]


def check_sequence(migrations: tuple[Migration, ...]) -> tuple[Migration, ...]:
    """Versions must be 1, 2, 3, ... so a gap or a duplicate fails at import, not in production."""
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise RuntimeError(
                f"migration {migration.name!r} has version {migration.version}, expected {expected}"
            )
    return migrations


def pending_migrations(applied: Collection[int], migrations: tuple[Migration, ...]) -> list[Migration]:
    """The migrations still to apply to a database that has ``applied`` versions, in order.

    ``migrations`` is a checked sequence (versions 1..n). A database at a version past n was
    migrated by newer code, which this code must not run against: StoreError.
    """
    if applied and max(applied) > len(migrations):
        raise StoreError(
            f"the database schema is at version {max(applied)}, newer than this code ({len(migrations)})"
        )
    return [migration for migration in migrations if migration.version not in applied]
