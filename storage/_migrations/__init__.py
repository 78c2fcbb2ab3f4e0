"""Versioned schema migrations, one ordered list per backend.

A migration is applied once, in its own transaction, and recorded in ``schema_migrations``.
Never edit a released migration: append a new one.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Migration", "check_sequence"]


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
