"""Which migrations a database still needs: the pure decision both backends share."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage import StoreError
from storage._migrations import Migration, check_sequence, pending_migrations
from storage._migrations.postgres import MIGRATIONS as POSTGRES
from storage._migrations.sqlite import MIGRATIONS as SQLITE

KNOWN = check_sequence(tuple(Migration(n, f"step {n}", (f"-- {n}",)) for n in range(1, 6)))


def test_a_new_database_needs_every_migration_in_order() -> None:
    assert pending_migrations(set(), KNOWN) == list(KNOWN)
    assert [m.version for m in pending_migrations(set(), SQLITE)] == list(range(1, len(SQLITE) + 1))
    assert [m.version for m in pending_migrations(set(), POSTGRES)] == list(range(1, len(POSTGRES) + 1))


def test_an_up_to_date_database_needs_none() -> None:
    assert pending_migrations({1, 2, 3, 4, 5}, KNOWN) == []


def test_only_the_missing_ones_are_applied_gaps_included() -> None:
    assert [m.version for m in pending_migrations({1, 2}, KNOWN)] == [3, 4, 5]
    assert [m.version for m in pending_migrations({1, 3}, KNOWN)] == [2, 4, 5]


def test_a_schema_newer_than_the_code_is_refused_with_both_versions() -> None:
    with pytest.raises(StoreError, match=r"schema is at version 6, newer than this code \(5\)"):
        pending_migrations({1, 2, 3, 4, 5, 6}, KNOWN)
    with pytest.raises(StoreError, match="version 7"):
        pending_migrations({7}, ())


@given(st.sets(st.integers(min_value=1, max_value=5)))
def test_pending_is_the_complement_of_applied_in_version_order(applied: set[int]) -> None:
    pending = pending_migrations(applied, KNOWN)
    assert [m.version for m in pending] == sorted(set(range(1, 6)) - applied)
