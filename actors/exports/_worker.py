"""The export worker: claims due export jobs (leased), streams each user's data from storage page by page as
gzip JSON lines into a multipart upload, and records the outcome.

Never the whole export in memory: one page of rows (``page_size``), the compressor's window and one upload
part are all it holds. While a job runs a heartbeat renews its lease (``lease_seconds`` / 3); a worker that
crashes leaves the lease to expire, and the next claim (this process's or another's) runs the job again.

A failed upload has already been retried by the bucket (``kernel.retry_call``, the S3 config's policy); the
job then fails with the reason. A database error leaves the job to its lease (it is claimed again).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import trio

from kernel import Actor, CircuitOpen, RetryAfter
from storage import ExportJob, SampleCursor, SampleRecord, Store, StoreError

from ._lines import Gzipper, encode_lines, entity_line, sample_line
from ._messages import Tick
from ._s3 import Bucket, classify_s3, describe

log = logging.getLogger("vigil.exports")


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerConfig:
    poll_interval: float | None = 2.0  # None: only when told (tests); a new export tells the worker at once
    lease_seconds: float = 60.0
    max_attempts: int = 3  # claims of one job (crashed workers) before it fails
    page_size: int = 5_000  # rows read from storage at once
    gzip_level: int = 6

    @property
    def heartbeat(self) -> float:
        return self.lease_seconds / 3


@dataclass(slots=True)
class Tally:
    rows: int = 0
    raw_bytes: int = 0


def object_key(job: ExportJob) -> str:
    """Where a job's file goes: the random job id only (no user id in the bucket's listing)."""
    return f"exports/{job.id}.jsonl.gz"


def _compress(gz: Gzipper, samples: list[SampleRecord]) -> bytes:
    return gz.feed(encode_lines(map(sample_line, samples)))


async def export_chunks(store: Store, user_id: str, tally: Tally, *, page_size: int = 5_000,
                        gzip_level: int = 6) -> AsyncIterator[bytes]:
    """The user's samples, then their sync entities, as gzip JSON lines, read and compressed page by page
    (each page its own read-only transaction; the encoding and compression in a thread)."""
    gz = Gzipper(gzip_level)
    after: SampleCursor | None = None
    while True:
        async with store.transaction(readonly=True) as tx:
            ((records, after),) = await tx.commit(tx.samples.dump(user_id, after=after, limit=page_size))
        if records:
            tally.rows += len(records)
            data = await trio.to_thread.run_sync(_compress, gz, records)
            if data:
                yield data
        if after is None:
            break
    key: tuple[str, str] | None = None
    while True:
        async with store.transaction(readonly=True) as tx:
            (entities,) = await tx.commit(tx.entities.list(user_id, after=key, limit=page_size))
        if entities:
            tally.rows += len(entities)
            data = gz.feed(encode_lines(map(entity_line, entities)))
            if data:
                yield data
        if len(entities) < page_size:
            break
        key = (entities[-1].entity_type, entities[-1].entity_id)
    tally.raw_bytes = gz.raw_bytes
    yield gz.finish()


class ExportWorker(Actor):
    def __init__(self, *, store: Store, bucket: Bucket, config: WorkerConfig, owner: str) -> None:
        self.store = store
        self.bucket = bucket
        self.config = config
        self.owner = owner

    async def started(self) -> None:
        if self.config.poll_interval is not None:
            self.every(self.config.poll_interval, Tick())
        self.send_after(0.0, Tick())  # what a crashed worker (or a previous incarnation) left due

    async def receive(self, msg: Any) -> Any:
        match msg:
            case Tick():
                await self._drain()
                return None
            case _:
                raise TypeError(f"export worker: unexpected message {msg!r}")

    async def _drain(self) -> None:
        """Run due jobs one after another until none is due (or object storage is refusing calls)."""
        while self.bucket.breaker.snapshot().state != "open":
            try:
                async with self.store.transaction() as tx:
                    (claimed,) = await tx.commit(tx.exports.claim(
                        self.owner, lease_seconds=self.config.lease_seconds, max_attempts=self.config.max_attempts))
            except StoreError as exc:
                log.warning("export worker: could not claim jobs: %s", exc)
                return
            if not claimed:
                return
            for job in claimed:
                await self._run(job)

    async def _run(self, job: ExportJob) -> None:
        tally = Tally()
        key = object_key(job)
        failure: Exception | None = None
        size = 0
        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._heartbeat, job.id)
            try:
                size = await self.bucket.upload(key, export_chunks(
                    self.store, job.user_id, tally, page_size=self.config.page_size,
                    gzip_level=self.config.gzip_level))
            except Exception as exc:
                failure = exc
            finally:
                nursery.cancel_scope.cancel()
        if isinstance(failure, StoreError):
            log.warning("export %s: the database failed mid-export; its lease will expire and it runs again: %s",
                        job.id, failure)
            return
        try:
            async with self.store.transaction() as tx:
                if failure is None:
                    await tx.commit(tx.exports.complete(self.owner, job.id, object_key=key, rows=tally.rows,
                                                        size=size))
                else:
                    await tx.commit(tx.exports.fail(self.owner, job.id, self._reason(failure)))
        except StoreError as exc:
            log.warning("export %s: could not record its outcome (the lease will expire): %s", job.id, exc)
            return
        if failure is None:
            log.info("export completed", extra={"fields": {
                "exportId": job.id, "rows": tally.rows, "bytes": size, "rawBytes": tally.raw_bytes,
                "seconds": round(trio.current_time() - started, 3)}})
        else:
            log.warning("export failed", extra={"fields": {"exportId": job.id, "reason": self._reason(failure)}})

    def _reason(self, failure: Exception) -> str:
        if isinstance(failure, CircuitOpen):
            return f"object storage is unavailable (circuit open): {failure}"
        if isinstance(classify_s3(failure), RetryAfter):  # retryable: the policy's attempts were spent
            return f"upload failed after {self.bucket.config.retry.attempts} attempts: {describe(failure)}"
        return f"upload failed: {describe(failure)}"

    async def _heartbeat(self, export_id: str) -> None:
        while True:
            await trio.sleep(self.config.heartbeat)
            try:
                async with self.store.transaction() as tx:
                    (held,) = await tx.commit(tx.exports.renew(self.owner, export_id,
                                                               lease_seconds=self.config.lease_seconds))
                if not held:
                    log.warning("export %s: lease lost to another worker", export_id)
            except StoreError as exc:
                log.warning("export %s: heartbeat failed: %s", export_id, exc)


__all__ = ["ExportWorker", "Tally", "WorkerConfig", "export_chunks", "object_key"]
