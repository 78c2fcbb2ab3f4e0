"""Versioned schema migrations, one ordered list per backend.

A migration is applied once, in its own transaction, and recorded in ``schema_migrations``.
Never edit a released migration: append a new one. Which ones a database still needs is decided
here (:func:`pending_migrations`); each backend only reads and records versions.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import NamedTuple

from .._errors import StoreError

__all__ = ["Migration", "check_sequence", "pending_migrations"]


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
