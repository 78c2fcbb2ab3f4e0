"""Sample upsert throughput: the Store API against the raw driver's best path, same run.

    .venv/bin/python bench/storage.py [--rows 100000] [--batch 500] [--rounds 3] [--skip-pg]

Each path upserts the same rows in batches, one committed transaction per batch, into a fresh
database (SQLite: a new file with the store's pragmas; PostgreSQL: a new schema), best of
``--rounds``. The raw paths get driver-ready data prepared outside the timing; the store path
gets ``SampleIn`` rows and pays for validation and conversion. Raw SQLite: ``executemany`` of
the upsert in one transaction per batch. Raw PostgreSQL: asyncpg ``unnest`` upsert, all batches
in one asyncio coroutine (no bridge crossings). The last line printed is one JSON object.
PostgreSQL DSN from VIGIL_BENCH_POSTGRES_DSN or VIGIL_TEST_POSTGRES_DSN.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import trio
import trio_asyncio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from storage import SampleIn, StoreConfig, open_store  # noqa: E402
from storage._time import micros_unchecked  # noqa: E402

USER = "bench-user"
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"

_COLUMNS = "user_id, source_id, source_record_id, start_at, end_at, metric, value, unit, metadata, created_at, updated_at"
_ON_CONFLICT = (
    " ON CONFLICT (user_id, source_id, source_record_id, start_at) DO UPDATE SET end_at = excluded.end_at,"
    " metric = excluded.metric, value = excluded.value, unit = excluded.unit, metadata = excluded.metadata,"
    " updated_at = excluded.updated_at, revision = health_samples.revision + 1"
    " WHERE health_samples.deleted_at IS NULL"  # as the store: a deleted identity stays deleted
)
RAW_SQLITE = f"INSERT INTO health_samples ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)" + _ON_CONFLICT
RAW_PG = (
    f"INSERT INTO health_samples ({_COLUMNS}) SELECT $1, s, r, st, en, m, v, u, md::jsonb, $10, $10"
    " FROM unnest($2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::text[], $7::float8[],"
    " $8::text[], $9::text[]) AS k(s, r, st, en, m, v, u, md)" + _ON_CONFLICT
)


def make_rows(n: int) -> list[SampleIn]:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    metrics = (("heart_rate", "bpm"), ("steps", "count"), ("spo2", "%"))
    rows = []
    for i in range(n):
        metric, unit = metrics[i % 3]
        start = base + timedelta(seconds=30 * i)
        meta = {"device": "watch"} if i % 10 == 0 else None
        rows.append(SampleIn("apple-watch-1", f"rec-{i}", metric, 50.0 + i % 70, unit, start, start, meta))
    return rows


def batches(rows: list[Any], size: int) -> list[list[Any]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


async def store_path(url: str, config: StoreConfig, chunks: list[list[SampleIn]]) -> float:
    async with open_store(url, config=config) as store:
        started = time.perf_counter()
        for chunk in chunks:
            async with store.transaction() as tx:
                await tx.commit(tx.samples.upsert_many(USER, chunk))
        return time.perf_counter() - started


# --- SQLite --------------------------------------------------------------------------------


def sqlite_raw(path: str, chunks: list[list[tuple[Any, ...]]]) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")  # what the store uses (StoreConfig default)
    try:
        started = time.perf_counter()
        for chunk in chunks:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(RAW_SQLITE, chunk)
            conn.execute("COMMIT")
        return time.perf_counter() - started
    finally:
        conn.close()


async def bench_sqlite(rows: list[SampleIn], size: int, rounds: int) -> tuple[float, float]:
    now = micros_unchecked(datetime.now(UTC))
    raw_rows = [
        (
            USER,
            r.source_id,
            r.source_record_id,
            micros_unchecked(r.start_at),
            micros_unchecked(r.end_at),
            r.metric,
            r.value,
            r.unit,
            json.dumps(r.metadata or {}),
            now,
            now,
        )
        for r in rows
    ]
    store_chunks, raw_chunks = batches(rows, size), batches(raw_rows, size)
    best_store = best_raw = float("inf")
    with tempfile.TemporaryDirectory(prefix="vigil-bench-") as tmp:
        for round_no in range(rounds):
            raw_db = os.path.join(tmp, f"raw{round_no}.db")
            async with open_store(f"sqlite:///{raw_db}"):
                pass  # the same schema, created by the store's migrations
            best_raw = min(best_raw, sqlite_raw(raw_db, raw_chunks))
            store_db = os.path.join(tmp, f"store{round_no}.db")
            best_store = min(
                best_store, await store_path(f"sqlite:///{store_db}", StoreConfig(), store_chunks)
            )
    n = len(rows)
    return n / best_store, n / best_raw


# --- PostgreSQL ----------------------------------------------------------------------------


async def aio(fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    return await trio_asyncio.aio_as_trio(fn)(*args)


async def pg_raw(dsn: str, schema: str, chunks: list[list[list[Any]]]) -> float:
    import asyncpg

    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        now = datetime.now(UTC)
        started = time.perf_counter()
        for cols in chunks:
            async with conn.transaction():
                await conn.execute(RAW_PG, USER, *cols, now)
        return time.perf_counter() - started
    finally:
        await conn.close()


async def pg_admin(dsn: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def bench_pg(dsn: str, rows: list[SampleIn], size: int, rounds: int) -> tuple[float, float]:
    store_chunks = batches(rows, size)
    raw_chunks = []
    for chunk in store_chunks:
        ordered = sorted(chunk, key=lambda r: (r.source_id, r.source_record_id, r.start_at))
        raw_chunks.append(
            [
                [r.source_id for r in ordered],
                [r.source_record_id for r in ordered],
                [r.start_at for r in ordered],
                [r.end_at for r in ordered],
                [r.metric for r in ordered],
                [r.value for r in ordered],
                [r.unit for r in ordered],
                [json.dumps(r.metadata or {}) for r in ordered],
            ]
        )
    best_store = best_raw = float("inf")
    tag = f"bench_{os.getpid()}"
    schemas = []
    try:
        for round_no in range(rounds):
            raw_schema, store_schema = f"{tag}_raw{round_no}", f"{tag}_store{round_no}"
            schemas += [raw_schema, store_schema]
            async with open_store(dsn, config=StoreConfig(pg_schema=raw_schema)):
                pass  # the same schema, created by the store's migrations
            best_raw = min(best_raw, await aio(pg_raw, dsn, raw_schema, raw_chunks))
            best_store = min(
                best_store, await store_path(dsn, StoreConfig(pg_schema=store_schema), store_chunks)
            )
    finally:
        for schema in schemas:
            await aio(pg_admin, dsn, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    n = len(rows)
    return n / best_store, n / best_raw


async def main(args: argparse.Namespace) -> dict[str, Any]:
    rows = make_rows(args.rows)
    print(f"{args.rows} rows, batches of {args.batch}, best of {args.rounds} rounds")
    report: dict[str, Any] = {"rows": args.rows, "batch": args.batch}
    store, raw = await bench_sqlite(rows, args.batch, args.rounds)
    print(
        f"sqlite   store {store:>10,.0f} rows/s   raw executemany {raw:>10,.0f} rows/s   ratio {store / raw:.2f}"
    )
    report.update(
        sqlite_store_rows_per_s=round(store),
        sqlite_raw_rows_per_s=round(raw),
        sqlite_ratio=round(store / raw, 3),
    )
    if not args.skip_pg:
        dsn = os.environ.get("VIGIL_BENCH_POSTGRES_DSN") or os.environ.get(
            "VIGIL_TEST_POSTGRES_DSN", DEFAULT_DSN
        )
        async with trio_asyncio.open_loop():
            store, raw = await bench_pg(dsn, rows, args.batch, args.rounds)
        print(
            f"postgres store {store:>10,.0f} rows/s   raw unnest      {raw:>10,.0f} rows/s   ratio {store / raw:.2f}"
        )
        report.update(
            pg_store_rows_per_s=round(store), pg_raw_rows_per_s=round(raw), pg_ratio=round(store / raw, 3)
        )
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-pg", action="store_true")
    result = trio.run(main, parser.parse_args())
    print(json.dumps(result))
