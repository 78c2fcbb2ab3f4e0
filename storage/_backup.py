"""A database as one stream of bytes, and back: the storage side of ``run.py backup`` and ``run.py restore``.

    SQLite       dump: the online backup API into a snapshot file beside the database (consistent while the
                 server writes: WAL readers never block writers), read in frames, zstd-compressed, then deleted;
                 load: the chunks (zstd, gzip or a plain file, told apart by their first bytes) into a file
                 beside the target as they download, checked, then renamed or copied in with the backup API
    PostgreSQL   dump: ``pg_dump --format=custom`` read from its stdout as it writes (no local copy);
                 load: ``pg_restore --exit-on-error`` fed on its stdin

Where the bytes go (a bucket) is the caller's business. A failed tool raises ``StoreError`` with its stderr.

SQLITE_ZSTD: a SQLite file is mostly page slack and repeated keys (samples compress ~5x at zstd level 1), and
the bucket's ingest, not the disk, bounds a backup: the fewer bytes sent, the sooner it is done. zstd level 1
compresses ~600 MB/s a core here and inflates ~1 GB/s (gzip level 1: ~140 and ~300, for the same size).
Each 4 MiB of the snapshot is its own frame (a concatenation of frames is one valid zstd stream, ``zstd -d``
reads it), so frames compress in worker threads side by side and come out in order, and each declares its
size and carries a checksum: a restore inflates at most one frame's bytes at a time and proves every byte.
pg_dump's custom format is compressed by pg_dump already. Backups made before zstd (gzip members, or plain)
still restore.
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
import threading
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
ZSTD_FRAME = 4 * 1024 * 1024  # bytes of the snapshot per zstd frame; ``ZSTD_THREADS`` frames at once
ZSTD_THREADS = 2
ZSTD_LEVEL = 1  # level 3 saves 6 % of the size for 1.7x the CPU: the bytes saved upload in less than that
ZSTD_FRAME_LIMIT = 64 * 1024 * 1024  # a restore refuses a frame declaring more: bounded memory
RESTORE_READ_AHEAD = 4  # chunks downloaded ahead of the one being inflated and written
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_ZSTD_HEADER_MAX = 18  # a frame header's largest size: with this many bytes a bad one is damage, not a cut
_ZSTD_BLOCK_MAX = 128 * 1024  # RFC 8878: no block is bigger
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
            # A scratch copy, deleted once read: no fsync (it halves the copy's time), no rollback journal.
            dst.execute("PRAGMA synchronous=OFF")
            dst.execute("PRAGMA journal_mode=OFF")
            src.backup(dst)  # one step: a single read transaction, so one consistent moment
        finally:
            dst.close()
    finally:
        src.close()


_CODECS = threading.local()  # each worker thread's own zstd contexts: not thread-safe, costly to make


def _zstd_frame(fd: int, offset: int, length: int) -> tuple[int, bytes]:
    """``length`` bytes of the file at ``offset`` as one zstd frame (its header declares its size, its end
    carries a checksum); read and compressed in a worker thread: neither holds the GIL for long."""
    import zstandard  # here, not at the top: only backups need it (the single binary leaves it out)

    packer = getattr(_CODECS, "packer", None)
    if packer is None:
        packer = _CODECS.packer = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True)
    data = os.pread(fd, length, offset)
    return len(data), packer.compress(data)


async def _zstd_file(path: str, on_read: Callable[[int], None] | None) -> AsyncIterator[bytes]:
    """The file as zstd frames of ``ZSTD_FRAME`` bytes each, ``ZSTD_THREADS`` read and compressed at once,
    yielded in order (a concatenation of frames is one valid zstd stream, ``zstd -d`` reads it). A thread
    pool of its own rather than a nursery: a generator must not yield inside a nursery (its consumer's
    cancellation would cross the yield)."""
    pending: collections.deque[concurrent.futures.Future[tuple[int, bytes]]] = collections.deque()

    async def ready() -> bytes:
        read, frame = await trio.to_thread.run_sync(pending.popleft().result)
        if on_read is not None:
            on_read(read)
        return frame

    fd = os.open(path, os.O_RDONLY)
    try:  # the pool is shut down (its threads done with ``fd``) before ``fd`` is closed
        with concurrent.futures.ThreadPoolExecutor(ZSTD_THREADS, thread_name_prefix="vigil-zstd") as pool:
            try:
                for offset in range(0, os.fstat(fd).st_size, ZSTD_FRAME):
                    pending.append(pool.submit(_zstd_frame, fd, offset, ZSTD_FRAME))
                    if len(pending) > ZSTD_THREADS:  # one more queued: no thread idles during a yield
                        yield await ready()
                while pending:
                    yield await ready()
            finally:
                for future in pending:
                    future.cancel()
    finally:
        os.close(fd)


class _Sink:
    """Writes a restored file from the backup's bytes as they arrive; ``feed`` and ``finish`` run in a worker
    thread (inflating and writing release the GIL). This one: a plain stream (an older, uncompressed
    backup), written as it is."""

    verified = False  # a checksum covered every byte written

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out

    def feed(self, data: bytes) -> None:
        _write_all(self._out, data)

    def finish(self) -> None:
        pass

    def close(self) -> None:
        pass


def _zstd_unpack(frame: bytes, size: int, fd: int, offset: int) -> None:
    """One whole frame inflated (its checksum checked) and written at ``offset``, in a worker thread."""
    import zstandard

    unpacker = getattr(_CODECS, "unpacker", None)
    if unpacker is None:
        unpacker = _CODECS.unpacker = zstandard.ZstdDecompressor()
    try:
        data = memoryview(unpacker.decompress(frame, max_output_size=size))
    except zstandard.ZstdError as exc:  # includes a checksum that does not match
        raise StoreError(f"the backup's zstd stream is damaged: {exc}") from exc
    _pwrite_all(fd, data, offset)


# Writes of a fresh file in 64 KiB pieces: here one 4 MiB pwrite ran at ~350 MB/s and the same bytes in 64 KiB
# pieces at 3-4 GB/s (a restore's time was mostly these writes).
_WRITE_PIECE = 64 * 1024


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data[:_WRITE_PIECE], offset)
        data, offset = data[written:], offset + written


def _write_all(out: IO[bytes], data: bytes) -> None:
    view = memoryview(data)
    for at in range(0, len(view), _WRITE_PIECE):
        out.write(view[at:at + _WRITE_PIECE])


class _ZstdSink(_Sink):
    """One or more zstd frames, ``ZSTD_THREADS`` inflated and written at once: each frame declares its size
    (at most ``ZSTD_FRAME_LIMIT``), so its place in the file is known before it is inflated, and its end is
    found from its blocks' headers without inflating it. Memory: a frame being gathered plus the few in
    the pool. A frame without a checksum, a damaged one or a stream that stops inside one raises StoreError.
    """

    verified = True

    def __init__(self, out: IO[bytes]) -> None:
        super().__init__(out)
        self._pool = concurrent.futures.ThreadPoolExecutor(ZSTD_THREADS, thread_name_prefix="vigil-unzstd")
        self._pending: collections.deque[concurrent.futures.Future[None]] = collections.deque()
        self._buffer = bytearray()  # the frame being gathered (and maybe the start of the next)
        self._block: int | None = None  # where its next block header is; None: its header is not read yet
        self._size = 0  # its content's size
        self._offset = 0  # where its content goes in the file

    def feed(self, data: bytes) -> None:
        self._buffer += data
        while (end := self._frame_end()) is not None:
            frame = bytes(self._buffer[:end])
            del self._buffer[:end]
            self._pending.append(self._pool.submit(_zstd_unpack, frame, self._size, self._out.fileno(),
                                                   self._offset))
            self._offset += self._size
            self._block = None
            while len(self._pending) > ZSTD_THREADS:  # one more queued: no thread idles while we wait
                self._pending.popleft().result()

    def _frame_end(self) -> int | None:
        """Where the buffer's first frame ends; None while it is not all here."""
        import zstandard

        buffer = self._buffer
        if self._block is None:
            try:
                frame = zstandard.get_frame_parameters(buffer)
            except zstandard.ZstdError as exc:
                if len(buffer) < _ZSTD_HEADER_MAX:  # the rest of the header is in the next chunk
                    return None
                raise StoreError(f"the backup's zstd stream is damaged: {exc}") from exc
            if frame.content_size > ZSTD_FRAME_LIMIT or not frame.has_checksum:  # unknown size: 2**64 - 1
                raise StoreError("the backup's zstd stream has a frame without a (bounded) size or a checksum")
            self._size = frame.content_size
            self._block = zstandard.frame_header_size(buffer)
        while self._block + 3 <= len(buffer):  # RFC 8878 3.1.1.2: 1 bit last, 2 bits type, 21 bits size
            header = int.from_bytes(buffer[self._block:self._block + 3], "little")
            kind, size = (header >> 1) & 3, header >> 3
            if kind == 3 or size > _ZSTD_BLOCK_MAX:
                raise StoreError("the backup's zstd stream is damaged: a block header is invalid")
            end = self._block + 3 + (1 if kind == 1 else size)  # kind 1: one byte repeated ``size`` times
            if header & 1:  # the last block: the frame's checksum follows
                return end + 4 if end + 4 <= len(buffer) else None
            self._block = end
        return None

    def finish(self) -> None:
        while self._pending:
            self._pending.popleft().result()
        if self._buffer:
            raise StoreError("the backup is truncated: its zstd stream ends inside a frame")

    def close(self) -> None:
        for future in self._pending:
            future.cancel()
        self._pool.shutdown()


class _GzipSink(_Sink):
    """One or more gzip members (backups before zstd), each CRC-checked; a stream that stops inside a member
    raises StoreError."""

    verified = True

    def __init__(self, out: IO[bytes]) -> None:
        super().__init__(out)
        self._unpacker = zlib.decompressobj(31)
        self._fed = False  # has the current member received any bytes?

    def feed(self, data: bytes) -> None:
        while data:
            self._fed = True
            try:
                _write_all(self._out, self._unpacker.decompress(data))
            except zlib.error as exc:
                raise StoreError(f"the backup's gzip stream is damaged: {exc}") from exc
            if not self._unpacker.eof:
                return
            data = self._unpacker.unused_data  # the next member starts here
            self._unpacker, self._fed = zlib.decompressobj(31), False

    def finish(self) -> None:
        if self._fed:
            raise StoreError("the backup is truncated: its gzip stream ends inside a member")


def _sink_for(first: bytes, out: IO[bytes]) -> _Sink:
    if first.startswith(_ZSTD_MAGIC):
        return _ZstdSink(out)
    if first.startswith(_GZIP_MAGIC):
        return _GzipSink(out)
    return _Sink(out)


async def _read_ahead(chunks: AsyncIterable[bytes], send: trio.MemorySendChannel[bytes],
                      failed: list[BaseException]) -> None:
    """Send ``chunks`` on until they end or the reader stops (it failed or is done: its caller says why). The
    source's own failure goes to ``failed``, for the caller to raise as it is, not inside an exception group."""
    async with send:
        try:
            async for data in chunks:
                await send.send(data)
        except trio.BrokenResourceError:
            return
        except Exception as exc:
            failed.append(exc)


async def _restore_file(chunks: AsyncIterable[bytes], path: str) -> bool:
    """Write the backup ``chunks`` into ``path`` (inflated, by their first bytes' format); the next
    ``RESTORE_READ_AHEAD`` chunks download while one is inflated and written. Returns whether a checksum
    covered the bytes."""
    send, receive = trio.open_memory_channel[bytes](RESTORE_READ_AHEAD)
    failed: list[BaseException] = []
    sink: _Sink | None = None
    head = b""  # the first bytes, until there are enough to tell the format
    out = await trio.to_thread.run_sync(lambda: open(path, "wb"))  # closed below
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_read_ahead, chunks, send, failed)
            async with receive:
                try:
                    async for data in receive:
                        if sink is None:
                            head += data
                            if len(head) < len(_ZSTD_MAGIC):
                                continue
                            sink, data, head = _sink_for(head, out), head, b""
                        await trio.to_thread.run_sync(sink.feed, data)
                except Exception as exc:  # a damaged stream: raised below, not as a group
                    failed.append(exc)
                    nursery.cancel_scope.cancel()
        if failed:
            raise failed[0]
        # an empty stream is no backup: the header check refuses it
        sink = sink or _sink_for(head, out)
        await trio.to_thread.run_sync(sink.feed, head)
        await trio.to_thread.run_sync(sink.finish)
        await trio.to_thread.run_sync(_flush_to_disk, out)  # on disk before it is used
    finally:
        if sink is not None:
            sink.close()  # waits for a frame still being written, if one failed
        out.close()
    return sink.verified


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
    """The database as a stream of chunks (see the module's table; ``chunk`` sizes pg_dump's reads, SQLite's
    are ``ZSTD_FRAME``s). ``on_read(n)`` hears the SQLite snapshot's bytes as they are read, before
    compression (progress against the file's size)."""
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
            async for frame in _zstd_file(snapshot, on_read):
                yield frame
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
def _flush_to_disk(out: IO[bytes]) -> None:
    out.flush()
    os.fsync(out.fileno())


def _fsync_directory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sqlite_load(snapshot: str, target: str, *, verified: bool) -> None:
    """The snapshot file into ``target``. ``verified``: its bytes passed a checksum (zstd's per frame, gzip's
    CRC-32 per member), so they are what the backup read, and a header check is enough; a plain (older) backup gets ``PRAGMA quick_check``.
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
            _fsync_directory(os.path.dirname(os.path.abspath(target)))  # the rename itself survives a crash
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
    failed: list[BaseException] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_read_ahead, chunks, send, failed)
        async with receive, stdin:
            try:
                async for data in receive:
                    await stdin.send_all(data)
                    total += len(data)
            except trio.BrokenResourceError:
                pass
    if failed:
        raise failed[0]
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

            verified = await _restore_file(counted(), snapshot)
            await trio.to_thread.run_sync(functools.partial(_sqlite_load, snapshot, target, verified=verified))
        return total
    async with _pg_process("pg_restore", "--exit-on-error", target, stdin=subprocess.PIPE,
                           stdout=subprocess.DEVNULL) as process:
        assert process.stdin is not None
        total = await _feed(chunks, process.stdin)
    return total
