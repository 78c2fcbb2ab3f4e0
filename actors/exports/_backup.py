"""``run.py backup`` and ``run.py restore KEY``: a database to the bucket and back.

The bytes come from (and go to) storage's ``dump_database`` / ``load_database`` as a stream, and go through
the bucket's streamed multipart upload: PostgreSQL's dump is never copied locally. Keys carry the time and the
schema version: ``backups/<backend>/<YYYYmmddTHHMMSSZ>-schema<N>.<sqlite.zst|pgdump>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

import trio

from storage import dump_database, inspect_database, load_database

from ._errors import BackupError, DatabaseNotEmpty
from ._progress import Progress
from ._s3 import Bucket

# SQLite backups are zstd (storage's SQLITE_ZSTD); older gzip ``.sqlite.gz`` and plain ``.sqlite`` ones still restore.
_EXTENSIONS = {"sqlite": "sqlite.zst", "postgresql": "pgdump"}
_KEY = re.compile(r"^backups/(?P<backend>sqlite|postgresql)/(?P<at>\d{8}T\d{6}Z)-schema(?P<schema>\d+)"
                  r"\.(?P<ext>sqlite\.zst|sqlite\.gz|sqlite|pgdump)$")
_SQLITE_DOWNLOAD_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class BackupResult:
    key: str
    backend: str
    schema_version: int
    bytes: int
    seconds: float


def backup_key(backend: str, schema_version: int, at: datetime) -> str:
    stamp = at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"backups/{backend}/{stamp}-schema{schema_version}.{_EXTENSIONS[backend]}"


def parse_backup_key(key: str) -> tuple[str, datetime, int]:
    """(backend, time, schema version) of a key ``backup_key`` made; BackupError for anything else."""
    m = _KEY.fullmatch(key)
    if m is None:
        raise BackupError(f"not a Vigil backup key: {key!r} (expected backups/<backend>/<time>-schema<N>.<ext>)")
    at = datetime.strptime(m["at"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return m["backend"], at, int(m["schema"])


async def backup_database(url: str, bucket: Bucket, *, now: datetime, progress: Progress | None = None) -> BackupResult:
    """A consistent copy of the database at ``url`` in the bucket; returns where and how big."""
    info = await inspect_database(url)
    if info.size_bytes is None:
        raise BackupError("there is no database to back up at that URL")
    key = backup_key(info.backend, info.schema_version, now)
    shown = progress or Progress("backup")
    started = trio.current_time()
    if info.backend == "sqlite":
        # Progress in the snapshot's bytes, read before compression: its total is the file's size.
        shown.total = info.size_bytes
        size = await bucket.upload(key, dump_database(url, on_read=shown.advance))
    else:  # pg_dump's output, as it is written: its size is not known ahead
        size = await bucket.upload(key, shown.counted(dump_database(url)))
    shown.finish()
    return BackupResult(key, info.backend, info.schema_version, size, trio.current_time() - started)


async def restore_database(url: str, key: str, bucket: Bucket, *, progress: Progress | None = None) -> BackupResult:
    """The backup ``key`` into the database at ``url``, which must be empty (DatabaseNotEmpty otherwise)."""
    backend, _, schema = parse_backup_key(key)
    info = await inspect_database(url)
    if info.backend != backend:
        raise BackupError(f"{key} is a {backend} backup; the target database is {info.backend}")
    if info.tables:
        raise DatabaseNotEmpty(list(info.tables))
    shown = progress or Progress("restore")
    shown.total = await bucket.size(key)
    started = trio.current_time()
    # SQLite: smaller chunks, so frames inflate while the rest downloads (storage reads a few ahead)
    chunks = bucket.download(key, chunk_size=_SQLITE_DOWNLOAD_CHUNK) if backend == "sqlite" else bucket.download(key)
    size = await load_database(url, shown.counted(chunks))
    shown.finish()
    return BackupResult(key, backend, schema, size, trio.current_time() - started)


__all__ = ["BackupResult", "backup_database", "backup_key", "parse_backup_key", "restore_database"]
