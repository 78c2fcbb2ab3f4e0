"""A database as one stream of bytes, and back: the storage side of ``run.py backup`` and ``run.py restore``.

    SQLite       dump: the online backup API into a snapshot file beside the database (consistent while the
                 server writes: WAL readers never block writers), read in chunks, gzip-compressed, then deleted;
                 load: the chunks (gzip or a plain file, told apart by their first bytes) into a file beside
                 the target, checked, then copied in with the backup API
    PostgreSQL   dump: ``pg_dump --format=custom`` read from its stdout as it writes (no local copy);
                 load: ``pg_restore --exit-on-error`` fed on its stdin

Where the bytes go (a bucket) is the caller's business. A failed tool raises ``StoreError`` with its stderr.

SQLITE_GZIP: a SQLite file is mostly page slack and repeated keys (samples compress ~5x at zlib level 1), and
the bucket's ingest, not the disk, bounds a backup: compressing costs less CPU time than the transfer it saves.
Each chunk is its own gzip member (a concatenation of members is one valid gzip file, ``gzip -d`` reads it),
so chunks compress in worker threads side by side (zlib releases the GIL) and come out in order. pg_dump's
custom format is compressed by pg_dump already.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import fcntl
import functools
import os
import shutil
import sqlite3
import subprocess
import tempfile
import zlib
from collections.abc import AsyncIterable, AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import trio

from ._errors import StoreError
from ._open import parse_url

__all__ = ["DatabaseInfo", "dump_database", "inspect_database", "load_database", "pg_tool"]

CHUNK = 1024 * 1024
GZIP_CHUNK = 4 * 1024 * 1024  # compressed as one gzip member; ``GZIP_THREADS`` of them at once
GZIP_THREADS = 2
GZIP_LEVEL = 1  # ~140 MB/s a core here, 5x on samples; level 6 gains 10 % of size for 3x the CPU
_GZIP_MAGIC = b"\x1f\x8b"
_PG_TABLES = (
    "SELECT schemaname || '.' || tablename FROM pg_tables"
    " WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
)


@dataclass(frozen=True, slots=True)
class DatabaseInfo:
    backend: Literal["sqlite", "postgresql"]
    schema_version: int  # 0: no migrations applied
    tables: tuple[str, ...]  # empty: an empty database (a restore may go there)
    size_bytes: int | None  # the file's size (SQLite) or pg_database_size; None when there is no database


def pg_tool(name: str) -> str:
    """``pg_dump`` / ``pg_restore``: ``VIGIL_PG_BIN`` (a directory) first, then PATH, then the newest
    /usr/lib/postgresql/*/bin."""
    configured = os.environ.get("VIGIL_PG_BIN")
    if configured:
        return str(Path(configured) / name)
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=lambda p: int(p.parts[-3]))
    if candidates:
        return str(candidates[-1])
    raise StoreError(f"{name} not found (install the PostgreSQL client tools or set VIGIL_PG_BIN)")


# -- inspection ---------------------------------------------------------------------------------------------
def _sqlite_info(path: str) -> DatabaseInfo:
    if path == ":memory:":
        raise StoreError("an in-memory SQLite database cannot be backed up or restored")
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return DatabaseInfo("sqlite", 0, (), None)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = tuple(r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"))
        version = 0
        if "schema_migrations" in tables:
            version = int(conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0])
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read the SQLite database at {path}: {exc}") from exc
    finally:
        conn.close()
    return DatabaseInfo("sqlite", version, tables, os.path.getsize(path))


async def _pg_info(dsn: str) -> DatabaseInfo:
    import asyncpg
    import trio_asyncio

    async def run() -> DatabaseInfo:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            tables = tuple(r[0] for r in await conn.fetch(_PG_TABLES))
            version = 0
            if any(t.endswith(".schema_migrations") for t in tables):
                version = int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations"))
            size = int(await conn.fetchval("SELECT pg_database_size(current_database())"))
            return DatabaseInfo("postgresql", version, tables, size)
        finally:
            await conn.close()

    from ._errors import translate_pg

    try:
        if trio_asyncio.current_loop.get() is None:
            async with trio_asyncio.open_loop():
                return await trio_asyncio.aio_as_trio(run)()  # type: ignore[no-any-return]
        return await trio_asyncio.aio_as_trio(run)()  # type: ignore[no-any-return]
    except Exception as exc:
        error = translate_pg(exc)
        if error is None:
            raise
        raise error from exc


async def inspect_database(url: str) -> DatabaseInfo:
    """What is there: the backend, its schema version, its tables and its size."""
    kind, target = parse_url(url)
    if kind == "sqlite":
        return await trio.to_thread.run_sync(_sqlite_info, target)
    return await _pg_info(target)


# -- dump ---------------------------------------------------------------------------------------------------
def _sqlite_snapshot(path: str, into: str) -> None:
    src = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(into)
        try:
            src.backup(dst)  # one step: a single read transaction, so one consistent moment
        finally:
            dst.close()
    finally:
        src.close()


def _gzip_member(data: bytes) -> bytes:
    packer = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # wbits 31: a gzip header and trailer
    return packer.compress(data) + packer.flush()


async def _gzipped(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """``chunks`` as gzip members, ``GZIP_THREADS`` compressing at once, yielded in order. A thread pool of
    its own rather than a nursery: a generator must not yield inside a nursery (its consumer's cancellation
    would cross the yield)."""
    pending: collections.deque[concurrent.futures.Future[bytes]] = collections.deque()
    with concurrent.futures.ThreadPoolExecutor(GZIP_THREADS, thread_name_prefix="vigil-gzip") as pool:
        try:
            async for data in chunks:
                pending.append(pool.submit(_gzip_member, data))
                if len(pending) > GZIP_THREADS:  # one more queued: no thread idles during a yield
                    yield await trio.to_thread.run_sync(pending.popleft().result)
            while pending:
                yield await trio.to_thread.run_sync(pending.popleft().result)
        finally:
            for future in pending:
                future.cancel()


class _Inflated:
    """A stream of one or more gzip members, inflated; a plain stream (an older, uncompressed backup) goes
    through as it is, and ``compressed`` says which it was once iterated. A stream that stops inside a member
    raises StoreError: a truncated backup is never restored as a shorter database."""

    def __init__(self, chunks: AsyncIterable[bytes]) -> None:
        self._chunks = chunks
        self.compressed = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._inflate()

    async def _inflate(self) -> AsyncIterator[bytes]:
        iterator = aiter(self._chunks)
        first = await anext(iterator, b"")  # an empty stream is no backup: the header check refuses it
        if not first.startswith(_GZIP_MAGIC):
            if first:
                yield first
            async for data in iterator:
                yield data
            return
        self.compressed = True
        unpacker = zlib.decompressobj(31)
        fed = False  # has the current member received any bytes?
        data = first
        while True:
            while data:
                fed = True
                try:
                    out = await trio.to_thread.run_sync(unpacker.decompress, data)
                except zlib.error as exc:
                    raise StoreError(f"the backup's gzip stream is damaged: {exc}") from exc
                if out:
                    yield out
                if not unpacker.eof:
                    break
                data = unpacker.unused_data  # the next member starts here
                unpacker, fed = zlib.decompressobj(31), False
            more = await anext(iterator, None)
            if more is None:
                break
            data = more
        if fed:
            raise StoreError("the backup is truncated: its gzip stream ends inside a member")


async def _read_file(path: str, chunk: int, on_read: Callable[[int], None] | None = None) -> AsyncIterator[bytes]:
    async with await trio.open_file(path, "rb") as f:
        while True:
            data = await f.read(chunk)
            if not data:
                return
            if on_read is not None:
                on_read(len(data))
            yield data


def _directory_of(path: str) -> str:
    """The directory holding ``path`` (made if missing): snapshots go beside the database, same disk."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    return directory


def _widen(pipe: object) -> None:
    """A 1 MiB pipe instead of 64 KiB (Linux): the tool runs that far ahead of us, so a moment when this
    process is not scheduled (a busy machine) does not stall it."""
    fileno = getattr(pipe, "fileno", None)
    if fileno is None or not hasattr(fcntl, "F_SETPIPE_SZ"):
        return
    with contextlib.suppress(OSError):
        fcntl.fcntl(fileno(), fcntl.F_SETPIPE_SZ, 1024 * 1024)


def _stderr_text(err: IO[bytes]) -> str:
    err.seek(0)
    return err.read().decode(errors="replace").strip()[-2000:]


@asynccontextmanager
async def _pg_process(tool: str, option: str, dsn: str, *, stdin: int, stdout: int) -> AsyncIterator[trio.Process]:
    """``tool`` (pg_dump, pg_restore) on ``dsn`` for the body; killed if the body fails, waited for if not, and
    a non-zero exit raised as StoreError with its stderr."""
    with tempfile.TemporaryFile() as err:
        process = await trio.lowlevel.open_process(
            [pg_tool(tool), option, "--no-owner", "--no-privileges", f"--dbname={dsn}"],
            stdin=stdin, stdout=stdout, stderr=err)
        for pipe in (process.stdin, process.stdout):
            _widen(pipe)
        try:
            yield process
            code = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                with trio.CancelScope(shield=True):
                    await process.wait()
        if code != 0:
            raise StoreError(f"{tool} failed (exit {code}): {_stderr_text(err)}")


async def dump_database(url: str, *, chunk: int = CHUNK,
                        on_read: Callable[[int], None] | None = None) -> AsyncIterator[bytes]:
    """The database as a stream of chunks (see the module's table). ``on_read(n)`` hears the SQLite
    snapshot's bytes as they are read, before compression (progress against the file's size)."""
    kind, target = parse_url(url)
    if kind == "sqlite":
        info = await inspect_database(url)
        if info.size_bytes is None:
            raise StoreError(f"no SQLite database at {target}")
        with tempfile.TemporaryDirectory(dir=_directory_of(target), prefix=".vigil-backup-") as tmp:
            snapshot = os.path.join(tmp, "snapshot.db")
            try:
                await trio.to_thread.run_sync(_sqlite_snapshot, target, snapshot)
            except sqlite3.Error as exc:
                raise StoreError(f"SQLite backup failed: {exc}") from exc
            async for block in _gzipped(_read_file(snapshot, max(chunk, GZIP_CHUNK), on_read)):
                yield block
        return
    async with _pg_process("pg_dump", "--format=custom", target, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE) as process:
        assert process.stdout is not None
        while True:
            data = await process.stdout.receive_some(chunk)
            if not data:
                break
            yield bytes(data)


# -- load ---------------------------------------------------------------------------------------------------
def _sqlite_load(snapshot: str, target: str, *, verified: bool) -> None:
    """The snapshot file into ``target``. ``verified``: its bytes passed gzip's CRC-32 per member, so they are
    what the backup read, and a header check is enough; a plain (older) backup gets ``PRAGMA quick_check``.
    A target with no file yet gets the snapshot renamed into place (same directory, so atomic); an existing,
    empty one gets it copied in with the backup API, which respects anyone holding it open."""
    with open(snapshot, "rb") as f:
        if f.read(16) != b"SQLite format 3\x00":
            raise StoreError("the backup is not a SQLite database (its header is wrong)")
    src = sqlite3.connect(f"file:{snapshot}?mode=ro", uri=True)
    try:
        if not verified:
            check = src.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise StoreError(f"the backup is not a sound SQLite database: {check}")
        src.execute("PRAGMA schema_version").fetchone()
        if not any(os.path.exists(target + suffix) for suffix in ("", "-wal", "-shm", "-journal")):
            src.close()
            os.replace(snapshot, target)
            dst = sqlite3.connect(target)
            try:
                dst.execute("PRAGMA journal_mode=WAL")
            finally:
                dst.close()
            return
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=WAL")
        finally:
            dst.close()
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"the backup is not a SQLite database: {exc}") from exc
    finally:
        src.close()


async def _feed(chunks: AsyncIterable[bytes], stdin: trio.abc.SendStream) -> int:
    """Write ``chunks`` to ``stdin`` with the next few read ahead (a download keeps going while the tool
    writes), then close it; returns the bytes written. A tool that stops reading ends it early (its exit
    code and stderr say why)."""
    send, receive = trio.open_memory_channel[bytes](4)
    total = 0
    failure: BaseException | None = None

    async def read_ahead() -> None:
        nonlocal failure
        async with send:
            try:
                async for data in chunks:
                    await send.send(data)
            except trio.BrokenResourceError:
                return  # the writer stopped
            except Exception as exc:  # the source failed: raised below, not as a group
                failure = exc

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_ahead)
        async with receive, stdin:
            try:
                async for data in receive:
                    await stdin.send_all(data)
                    total += len(data)
            except trio.BrokenResourceError:
                pass
    if failure is not None:
        raise failure
    return total


async def load_database(url: str, chunks: AsyncIterable[bytes]) -> int:
    """Write a ``dump_database`` stream into the database at ``url``, which the caller has checked is empty.
    Returns the bytes read."""
    kind, target = parse_url(url)
    total = 0
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(dir=_directory_of(target), prefix=".vigil-restore-") as tmp:
            snapshot = os.path.join(tmp, "snapshot.db")
            async def counted() -> AsyncIterator[bytes]:
                nonlocal total
                async for data in chunks:
                    total += len(data)
                    yield data

            inflated = _Inflated(counted())
            async with await trio.open_file(snapshot, "wb") as f:
                async for data in inflated:
                    await f.write(data)
            await trio.to_thread.run_sync(functools.partial(_sqlite_load, snapshot, target,
                                                            verified=inflated.compressed))
        return total
    async with _pg_process("pg_restore", "--exit-on-error", target, stdin=subprocess.PIPE,
                           stdout=subprocess.DEVNULL) as process:
        assert process.stdin is not None
        total = await _feed(chunks, process.stdin)
    return total
