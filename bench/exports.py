"""Exports and backups against moto's S3 server (its own process, loopback), beside the raw tools, same run.

    .venv/bin/python bench/exports.py [--rows 1000000] [--pg-rows 200000] [--skip-pg]

- export: one user's ``--rows`` samples streamed from a SQLite store as gzip JSON lines into a multipart upload
  (the export worker's code path), in a fresh process so its RSS growth is the export's alone (sampled every
  5 ms; limit 64 MB). Figures: rows/s, peak RSS growth.
- backup / restore, SQLite: ``run.py backup``'s path (online backup API, streamed to the bucket) and restore (from
  the bucket into an empty file) beside raw ``sqlite3 DB ".backup FILE"`` / ``sqlite3 NEW ".restore FILE"`` of the
  same database. MB/s of the database's size; ratio = ours / raw (target >= 0.8).
  Also raw ``.backup`` then boto3's ``upload_file`` of that file to the same moto (what a backup that ends in
  the bucket costs at best: moto's server takes ~25-40 MB/s here, far below a local copy), and boto3's
  ``download_file`` of that file then the raw restore (the same for restores; PostgreSQL gets both references
  too). Ours stores SQLite zstd-compressed (``sqlite_stored_mb``), so it moves ~5x fewer bytes than the raw
  file; a restore pays for inflating them (~1 GB/s a core). Also the upload (download) alone of the object ours
  stored, from (into) memory, as a multiple of the raw local tool's whole time: the bucket's share, which no
  backup ending in it can avoid.
- backup / restore, PostgreSQL (``--pg-rows`` samples in a database of its own on the shared server, dropped
  after): ``pg_dump --format=custom`` streamed to the bucket, and ``pg_restore`` fed from it, beside raw
  ``pg_dump --format=custom -f FILE`` / ``pg_restore -d NEW FILE``. MB/s of the dump's size.

The machine is shared: figures are noisy; each ratio compares two paths measured in the same run. The last line
printed is one JSON object. PostgreSQL DSN from VIGIL_BENCH_POSTGRES_DSN or VIGIL_TEST_POSTGRES_DSN.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio
import trio_asyncio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actors.exports import Bucket, Tally, backup_database, export_chunks, restore_database  # noqa: E402
from bench.ingest import pg_admin  # noqa: E402
from storage import migrate, open_store, pg_tool  # noqa: E402
from tests.exports_helpers import MotoServer, moto_server, seed  # noqa: E402

USER = "bench-user"
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
RSS_LIMIT = 64 * 1024 * 1024


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# -- export (run in a child process: --phase export) ----------------------------------------------------------
async def export_phase(db: str, endpoint: str, bucket_name: str) -> dict[str, Any]:
    from actors.exports import S3Config

    s3 = S3Config(bucket=bucket_name, access_key_id="bench", secret_access_key="bench", endpoint_url=endpoint)
    async with open_store(f"sqlite:///{db}") as store:
        bucket = Bucket(s3)
        await bucket.client()
        gc.collect()
        baseline = peak = rss()

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, rss())
                await trio.sleep(0.005)

        tally = Tally()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            started = time.perf_counter()
            size = await bucket.upload(f"exports/{uuid.uuid4()}.jsonl.gz", export_chunks(store, USER, tally))
            seconds = time.perf_counter() - started
            nursery.cancel_scope.cancel()
    return {"export_rows": tally.rows, "export_seconds": round(seconds, 3),
            "export_rows_per_s": round(tally.rows / seconds), "export_raw_mb": round(tally.raw_bytes / 1e6, 1),
            "export_gzip_mb": round(size / 1e6, 1), "export_rss_growth_mb": round((peak - baseline) / 2**20, 1),
            "export_rss_limit_mb": RSS_LIMIT // 2**20, "export_rss_ok": peak - baseline <= RSS_LIMIT}


# -- timing helpers -------------------------------------------------------------------------------------------
def timed_run(cmd: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - started


async def timed(fn: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await fn()
    return time.perf_counter() - started, result


async def raw_transfers(moto: MotoServer, path: str, into: str) -> tuple[float, float]:
    """boto3's own managed transfers (threads, multipart) of the raw tool's file to the same moto and back:
    what the bucket takes at best, so ``raw tool + upload`` is the fair raw of a backup that ends in the bucket
    and ``download + raw restore`` the fair raw of a restore from it. (seconds up, seconds down)"""
    bucket = moto.new_bucket()
    client = moto.client()
    started = time.perf_counter()
    await trio.to_thread.run_sync(lambda: client.upload_file(path, bucket.bucket, "raw"))
    up = time.perf_counter() - started
    started = time.perf_counter()
    await trio.to_thread.run_sync(lambda: client.download_file(bucket.bucket, "raw", into))
    return up, time.perf_counter() - started


def rates(prefix: str, size: int, ours_backup: float, raw_backup: float, ours_restore: float,
          raw_restore: float, upload: float, download: float) -> dict[str, Any]:
    mb = size / 1e6
    out = {f"{prefix}_mb": round(mb, 1),
           f"{prefix}_download_then_raw_restore_mb_s": round(mb / (raw_restore + download), 1),
           f"{prefix}_restore_ratio_vs_download_then_raw": round((raw_restore + download) / ours_restore, 2),
           f"{prefix}_raw_backup_then_upload_mb_s": round(mb / (raw_backup + upload), 1),
           f"{prefix}_backup_ratio_vs_raw_then_upload": round((raw_backup + upload) / ours_backup, 2),
           f"{prefix}_backup_mb_s": round(mb / ours_backup, 1), f"{prefix}_raw_backup_mb_s": round(mb / raw_backup, 1),
           f"{prefix}_restore_mb_s": round(mb / ours_restore, 1),
           f"{prefix}_raw_restore_mb_s": round(mb / raw_restore, 1),
           f"{prefix}_backup_ratio": round(raw_backup / ours_backup, 2),
           f"{prefix}_restore_ratio": round(raw_restore / ours_restore, 2)}
    return out


async def sqlite_phase(db: str, size: int, tmp: str, moto: MotoServer) -> dict[str, Any]:
    bucket = Bucket(moto.new_bucket())
    raw_backup = timed_run(["sqlite3", db, f".backup {tmp}/raw.db"])
    ours_backup, result = await timed(lambda: backup_database(f"sqlite:///{db}", bucket, now=datetime.now(UTC)))
    raw_restore = timed_run(["sqlite3", f"{tmp}/raw-restored.db", f".restore {tmp}/raw.db"])
    ours_restore, _ = await timed(lambda: restore_database(f"sqlite:///{tmp}/restored.db", result.key, bucket))
    upload, download = await raw_transfers(moto, f"{tmp}/raw.db", f"{tmp}/downloaded.db")
    out = rates("sqlite", size, ours_backup, raw_backup, ours_restore, raw_restore, upload, download)
    out["sqlite_stored_mb"] = round(result.bytes / 1e6, 1)  # zstd: what the bucket holds
    # The transfer alone of what ours stores (from memory, same Bucket code, nothing else): what no SQLite
    # backup that ends in this bucket can beat, as a share of the raw local tool's whole time.
    stored = b"".join([chunk async for chunk in bucket.download(result.key)])

    async def from_memory() -> AsyncIterator[bytes]:
        for at in range(0, len(stored), 1 << 20):
            yield stored[at:at + (1 << 20)]

    transfer_up, _ = await timed(lambda: bucket.upload(f"{result.key}.copy", from_memory()))
    transfer_down, _ = await timed(lambda: drain(bucket.download(result.key)))
    out["sqlite_stored_upload_s_per_raw_backup_s"] = round(transfer_up / raw_backup, 2)
    out["sqlite_stored_download_s_per_raw_restore_s"] = round(transfer_down / raw_restore, 2)
    return out


async def drain(chunks: AsyncIterator[bytes]) -> None:
    async for _ in chunks:
        pass


def db_dsn(admin: str, name: str) -> str:
    return admin.rsplit("/", 1)[0] + f"/{name}"


async def pg_phase(admin: str, names: list[str], rows: int, tmp: str, moto: MotoServer) -> dict[str, Any]:
    async with trio_asyncio.open_loop():
        src, raw, ours = (db_dsn(admin, n) for n in names)
        await migrate(src)
        async with open_store(src) as store:
            await seed(store, USER, rows, entities=10)
        bucket = Bucket(moto.new_bucket())
        dump = f"{tmp}/raw.pgdump"
        raw_backup = timed_run([pg_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges",
                                f"--dbname={src}", "-f", dump])
        ours_backup, result = await timed(lambda: backup_database(src, bucket, now=datetime.now(UTC)))
        raw_restore = timed_run([pg_tool("pg_restore"), "--exit-on-error", "--no-owner", "--no-privileges",
                                 f"--dbname={raw}", dump])
        ours_restore, _ = await timed(lambda: restore_database(ours, result.key, bucket))
        upload, download = await raw_transfers(moto, dump, f"{tmp}/downloaded.pgdump")
        out = rates("pg", result.bytes, ours_backup, raw_backup, ours_restore, raw_restore, upload, download)
        out["pg_rows"] = rows
        return out


async def seed_sqlite(db: str, rows: int) -> None:
    async with open_store(f"sqlite:///{db}") as store:
        await seed(store, USER, rows, entities=10, batch=10_000)


def sqlite_and_export(tmp: str, rows: int, moto: MotoServer) -> dict[str, Any]:
    db = f"{tmp}/v.db"
    started = time.perf_counter()
    trio.run(seed_sqlite, db, rows)
    print(f"seeded {rows:,} samples into SQLite in {time.perf_counter() - started:.1f} s")
    s3 = moto.new_bucket()
    child = subprocess.run([sys.executable, __file__, "--phase", "export", "--db", db, "--endpoint",
                            moto.endpoint, "--bucket", s3.bucket], check=True, capture_output=True, text=True)
    out = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"export: {out['export_rows_per_s']:,} rows/s ({out['export_rows']:,} rows, {out['export_raw_mb']} MB "
          f"of JSON lines -> {out['export_gzip_mb']} MB gzip in {out['export_seconds']} s); RSS growth "
          f"{out['export_rss_growth_mb']} MB  [limit {out['export_rss_limit_mb']} MB]")
    out.update(trio.run(sqlite_phase, db, os.path.getsize(db), tmp, moto))
    print(f"sqlite ({out['sqlite_mb']} MB, stored zstd {out['sqlite_stored_mb']} MB): "
          f"backup {out['sqlite_backup_mb_s']} MB/s vs raw .backup "
          f"{out['sqlite_raw_backup_mb_s']} MB/s ({out['sqlite_backup_ratio']}x); restore "
          f"{out['sqlite_restore_mb_s']} MB/s vs raw .restore {out['sqlite_raw_restore_mb_s']} MB/s "
          f"({out['sqlite_restore_ratio']}x)  [target >= 0.8x]; raw .backup then boto3 upload_file "
          f"{out['sqlite_raw_backup_then_upload_mb_s']} MB/s ({out['sqlite_backup_ratio_vs_raw_then_upload']}x); "
          f"boto3 download_file then raw .restore {out['sqlite_download_then_raw_restore_mb_s']} MB/s "
          f"({out['sqlite_restore_ratio_vs_download_then_raw']}x); uploading the stored object alone takes "
          f"{out['sqlite_stored_upload_s_per_raw_backup_s']}x raw .backup's time, downloading it "
          f"{out['sqlite_stored_download_s_per_raw_restore_s']}x raw .restore's")
    return dict(out)


def postgres(tmp: str, rows: int, moto: MotoServer) -> dict[str, Any]:
    admin = os.environ.get("VIGIL_BENCH_POSTGRES_DSN") or os.environ.get("VIGIL_TEST_POSTGRES_DSN") or DEFAULT_DSN
    tag = uuid.uuid4().hex[:8]
    names = [f"bench_exports_{tag}_{n}" for n in ("src", "raw", "ours")]
    try:
        for name in names:
            trio.run(pg_admin, admin, f'CREATE DATABASE "{name}"')
        out = trio.run(pg_phase, admin, names, rows, tmp, moto)
    finally:
        for name in names:
            trio.run(pg_admin, admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(f"postgresql ({out['pg_rows']:,} samples, dump {out['pg_mb']} MB): backup {out['pg_backup_mb_s']} "
          f"MB/s vs raw pg_dump {out['pg_raw_backup_mb_s']} MB/s ({out['pg_backup_ratio']}x); restore "
          f"{out['pg_restore_mb_s']} MB/s vs raw pg_restore {out['pg_raw_restore_mb_s']} MB/s "
          f"({out['pg_restore_ratio']}x)  [target >= 0.8x]; raw pg_dump then boto3 upload_file "
          f"{out['pg_raw_backup_then_upload_mb_s']} MB/s ({out['pg_backup_ratio_vs_raw_then_upload']}x); "
          f"boto3 download_file then raw pg_restore {out['pg_download_then_raw_restore_mb_s']} MB/s "
          f"({out['pg_restore_ratio_vs_download_then_raw']}x)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--pg-rows", type=int, default=1_000_000)
    parser.add_argument("--skip-pg", action="store_true")
    parser.add_argument("--skip-sqlite", action="store_true", help="PostgreSQL only (no export, no SQLite)")
    parser.add_argument("--phase", choices=["export"], help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--bucket", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase == "export":
        print(json.dumps(trio.run(export_phase, args.db, args.endpoint, args.bucket)))
        return

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="vigil-bench-exports-") as tmp, moto_server() as moto:
        if not args.skip_sqlite:
            out.update(sqlite_and_export(tmp, args.rows, moto))
        if not args.skip_pg:
            out.update(postgres(tmp, args.pg_rows, moto))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
