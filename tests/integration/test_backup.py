"""Backup and restore (``run.py backup`` / ``run.py restore KEY``) against moto's S3 server on loopback: a backup
restored into an empty database reads back identically, on SQLite (online backup API, taken while the store is
open and being written) and on PostgreSQL (``pg_dump`` streamed, on a throwaway cluster of our own); a non-empty
target is refused with a clear message."""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio
import trio.lowlevel
import zstandard

from actors.exports import (
    BackupError,
    Bucket,
    DatabaseNotEmpty,
    Progress,
    backup_database,
    parse_backup_key,
    restore_database,
)
from storage import HealthSample, SampleCursor, Store, StoreError, SyncEntity, inspect_database, open_store
from tests.exports_helpers import (
    ACCESS_KEY,
    SECRET_KEY,
    MotoServer,
    ThrowawayPostgres,
    moto_server,
    seed,
    throwaway_postgres,
)

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 3, 4, 5, 6, tzinfo=UTC)


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with moto_server() as server:
        yield server


@pytest.fixture(scope="module")
def pg() -> Iterator[ThrowawayPostgres]:
    with throwaway_postgres() as cluster:
        yield cluster


async def contents(store: Store, users: list[str]) -> tuple[list[HealthSample], list[SyncEntity], int]:
    samples: list[HealthSample] = []
    entities: list[SyncEntity] = []
    for user in users:
        after: SampleCursor | None = None
        while True:
            async with store.transaction(readonly=True) as tx:
                (page,) = await tx.commit(tx.samples.query(user, after=after, limit=1000, include_deleted=True))
            samples += page.items
            if page.next_cursor is None:
                break
            after = page.next_cursor
        async with store.transaction(readonly=True) as tx:
            (found,) = await tx.commit(tx.entities.list(user, limit=1000))
        entities += found
    async with store.transaction(readonly=True) as tx:
        (marks,) = await tx.commit(tx.watermarks.get(users[0]))
    return samples, entities, marks.watermark


async def roundtrip(source: str, target: str, bucket: Bucket, *, write_during: bool = False) -> None:
    async with open_store(source) as store:
        await seed(store, "alice", 3_000, entities=4)
        await seed(store, "bob", 50, entities=1)
        async with store.transaction() as tx:
            await tx.commit(tx.watermarks.bump("alice", by=7))

        async def writer() -> None:  # the server keeps writing while the backup runs
            i = 0
            while True:
                async with store.transaction() as tx:
                    await tx.commit(tx.entities.put_many([SyncEntity("carol", "note", f"n{i}", 1, {"i": i})]))
                i += 1
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            if write_during:
                nursery.start_soon(writer)
            result = await backup_database(source, bucket, now=NOW, progress=Progress("backup"))
            nursery.cancel_scope.cancel()
        before = await contents(store, ["alice", "bob"])
    backend, at, schema = parse_backup_key(result.key)
    info = await inspect_database(source)
    assert (backend, at, schema) == (info.backend, NOW, info.schema_version) and schema >= 4
    assert result.bytes > 0
    restored = await restore_database(target, result.key, bucket, progress=Progress("restore"))
    assert restored.bytes == result.bytes
    async with open_store(target) as again:
        after = await contents(again, ["alice", "bob"])
    assert len(before[0]) == 3_050 and len(before[1]) == 5 and before[2] == 7
    assert after == before
    assert (await inspect_database(target)).schema_version == info.schema_version


async def test_sqlite_backup_taken_while_writing_restores_identically(tmp_path: Path, moto: MotoServer) -> None:
    bucket = Bucket(moto.new_bucket())
    await roundtrip(f"sqlite:///{tmp_path / 'live.db'}", f"sqlite:///{tmp_path / 'restored' / 'v.db'}", bucket,
                    write_during=True)


@pytest.mark.slow
async def test_postgres_backup_restores_identically(pg: ThrowawayPostgres, moto: MotoServer) -> None:
    bucket = Bucket(moto.new_bucket())
    await roundtrip(pg.create_database(), pg.create_database(), bucket)


@pytest.mark.slow
async def test_restore_refuses_a_database_that_is_not_empty(tmp_path: Path, pg: ThrowawayPostgres,
                                                            moto: MotoServer) -> None:
    bucket = Bucket(moto.new_bucket())
    for source in (f"sqlite:///{tmp_path / 'a.db'}", pg.create_database()):
        async with open_store(source) as store:
            await seed(store, "alice", 5, entities=0)
        result = await backup_database(source, bucket, now=NOW)
        with pytest.raises(DatabaseNotEmpty, match="not empty .* restore into a new, empty database"):
            await restore_database(source, result.key, bucket)
    with pytest.raises(BackupError, match="is a postgresql backup; the target database is sqlite"):
        await restore_database(f"sqlite:///{tmp_path / 'b.db'}", result.key, bucket)
    with pytest.raises(BackupError, match="not a Vigil backup key"):
        await restore_database(f"sqlite:///{tmp_path / 'b.db'}", "../etc/passwd", bucket)


def run_py(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], env=env, capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


@pytest.mark.slow
async def test_run_py_backup_then_restore(tmp_path: Path, moto: MotoServer) -> None:
    s3 = moto.new_bucket()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    source = f"sqlite:///{tmp_path / 'v.db'}"
    async with open_store(source) as store:
        await seed(store, "alice", 100, entities=2)
    env.update(VIGIL_S3_ENDPOINT_URL=s3.endpoint_url or "", VIGIL_S3_BUCKET=s3.bucket,
               VIGIL_S3_ACCESS_KEY_ID=ACCESS_KEY, VIGIL_S3_SECRET_ACCESS_KEY=SECRET_KEY)
    done = run_py("backup", "--database", source, env=env)
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    assert re.fullmatch(r"backups/sqlite/\d{8}T\d{6}Z-schema\d+\.sqlite\.zst", key), done.stdout
    # Not a terminal: progress is JSON log lines (bytes, rate, ETA).
    progress = [line for line in done.stderr.splitlines() if '"backup done"' in line or '"backup progress"' in line]
    assert progress and all('"bytesPerSecond"' in line and '"etaSeconds"' in line for line in progress), done.stderr
    refused = run_py("restore", key, "--database", source, env=env)
    assert refused.returncode == 1 and "not empty" in refused.stderr
    target = f"sqlite:///{tmp_path / 'r.db'}"
    restored = run_py("restore", key, "--database", target, env=env)
    assert restored.returncode == 0, restored.stderr
    async with open_store(source) as a, open_store(target) as b:
        assert await contents(a, ["alice"]) == await contents(b, ["alice"])



async def _object(bucket: Bucket, key: str) -> bytes:
    return b"".join([chunk async for chunk in bucket.download(key)])


async def _chunks(data: bytes, size: int = 1 << 20) -> AsyncIterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at:at + size]


async def test_sqlite_backup_is_zstd_and_older_or_damaged_objects_restore_or_fail_cleanly(
        tmp_path: Path, moto: MotoServer) -> None:
    """The object is zstd (several frames: one per 4 MiB, each with its size and a checksum) whose content is
    the SQLite database; older gzip ``.sqlite.gz`` and uncompressed ``.sqlite`` backups still restore; a
    truncated or damaged one fails and leaves the target empty."""
    bucket = Bucket(moto.new_bucket())
    source = f"sqlite:///{tmp_path / 'v.db'}"
    async with open_store(source) as store:
        await seed(store, "alice", 40_000, entities=3)  # > one 4 MiB frame: several frames
    result = await backup_database(source, bucket, now=NOW)
    assert result.key.endswith(".sqlite.zst")
    stored = await _object(bucket, result.key)
    assert stored[:4] == b"\x28\xb5\x2f\xfd" and len(stored) == result.bytes
    first = zstandard.get_frame_parameters(stored)
    assert first.has_checksum and first.content_size == 4 * 1024 * 1024
    plain = zstandard.ZstdDecompressor().decompressobj(read_across_frames=True).decompress(stored)
    assert plain.startswith(b"SQLite format 3\x00")
    assert len(stored) * 3 < len(plain) and len(plain) > 4 * 1024 * 1024

    async def restores(key: str, data: bytes, name: str) -> None:
        await bucket.upload(key, _chunks(data))
        target = f"sqlite:///{tmp_path / name}"
        await restore_database(target, key, bucket)
        async with open_store(source) as a, open_store(target) as b:
            assert await contents(a, ["alice"]) == await contents(b, ["alice"])

    gz_key = result.key.replace("T040506Z", "T040508Z").removesuffix(".zst") + ".gz"
    # the gzip backups' layout: one member per 4 MiB
    await restores(gz_key, b"".join(gzip.compress(plain[at:at + 4 * 1024 * 1024], compresslevel=1)
                                    for at in range(0, len(plain), 4 * 1024 * 1024)), "legacy-gz.db")
    await restores(result.key.removesuffix(".zst"), plain, "legacy-plain.db")
    await restores(result.key.replace("T040506Z", "T040509Z"), stored, "again.db")  # odd chunk bounds: 1 MiB

    flipped = bytearray(stored)
    flipped[zstandard.frame_header_size(stored) + 3 + 100] ^= 0x55  # inside the first block's payload
    unsized = zstandard.ZstdCompressor(write_checksum=True, write_content_size=False).compress(plain)
    for at, data, error in (("T040507Z", stored[: len(stored) - 1000], "truncated"),
                            ("T040510Z", stored[:-2], "truncated"),  # only the last checksum is cut
                            ("T040511Z", bytes(flipped), "damaged"),
                            ("T040512Z", unsized, "without a .bounded. size")):  # memory: refused
        key = result.key.replace("T040506Z", at)
        await bucket.upload(key, _chunks(data))
        damaged = f"sqlite:///{tmp_path / f'damaged-{at}.db'}"
        with pytest.raises(StoreError, match=error):
            await restore_database(damaged, key, bucket)
        assert (await inspect_database(damaged)).tables == ()


async def test_an_upload_whose_source_fails_leaves_no_parts_behind(moto: MotoServer) -> None:
    """The multipart upload is created beside the source's first bytes; a source that fails, early or after a
    part went up, leaves the error as it was and no upload (nor parts) in the bucket."""
    bucket = Bucket(moto.new_bucket())

    async def failing(after: int) -> AsyncIterator[bytes]:
        for _ in range(after):
            yield b"x" * (1 << 20)
        raise StoreError("the snapshot failed")

    for after in (0, 7):  # before the upload exists, and after a 5 MiB part
        with pytest.raises(StoreError, match="the snapshot failed"):
            await bucket.upload(f"k{after}", failing(after))
    client = await bucket.client()
    uploads = await trio.to_thread.run_sync(lambda: client.list_multipart_uploads(Bucket=bucket.config.bucket))
    assert uploads.get("Uploads", []) == []
