"""Shared fixtures of the integration tests.

PostgreSQL comes from ``VIGIL_TEST_POSTGRES_DSN`` (default ``postgresql://postgres@127.0.0.1:5432/test``).
When it cannot be reached its tests are skipped with a loud reason, except under ``CI=true``,
where they fail: CI must never pass by skipping.

``store`` runs a test against both backends, each time on a fresh database state (a new
SQLite file, or a new PostgreSQL schema dropped afterwards).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from storage import Store, StoreConfig, open_store

POSTGRES_DSN_ENV = "VIGIL_TEST_POSTGRES_DSN"
DEFAULT_POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


async def _pg_execute(dsn: str, sql: str | None = None) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=3)
    try:
        if sql:
            await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """The DSN of a reachable PostgreSQL (skips, or fails under CI=true, when unreachable)."""
    dsn = os.environ.get(POSTGRES_DSN_ENV, DEFAULT_POSTGRES_DSN)
    try:
        asyncio.run(_pg_execute(dsn))  # sync fixture: runs outside trio, so plain asyncio is fine
    except Exception as exc:
        reason = (
            f"POSTGRESQL UNREACHABLE at {dsn} ({type(exc).__name__}: {exc}); "
            f"set {POSTGRES_DSN_ENV} to run the PostgreSQL tests"
        )
        if _in_ci():
            pytest.fail(f"{reason} [CI=true: unreachable is a failure]", pytrace=False)
        pytest.skip(reason)
    return dsn


@pytest.fixture
def postgres_schema(postgres_dsn: str) -> Iterator[str]:
    """A schema name unique to this test, dropped (with everything in it) afterwards."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    yield name
    asyncio.run(_pg_execute(postgres_dsn, f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_url(store_backend: str, request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> str:
    if store_backend == "sqlite":
        return f"sqlite:///{os.path.join(tmp_path, 'vigil.db')}"
    return str(request.getfixturevalue("postgres_dsn"))


@pytest.fixture
def store_config(store_backend: str, request: pytest.FixtureRequest) -> StoreConfig:
    """The config ``store`` uses; tests derive variants with ``dataclasses.replace``."""
    if store_backend == "sqlite":
        return StoreConfig(seed=7)
    return StoreConfig(seed=7, pg_schema=request.getfixturevalue("postgres_schema"), pg_max_size=4)


@pytest.fixture
async def store(store_url: str, store_config: StoreConfig) -> AsyncIterator[Store]:
    async with open_store(store_url, config=store_config) as opened:
        yield opened
