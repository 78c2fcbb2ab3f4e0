"""S3-compatible object storage (AWS, MinIO, moto, ...) through boto3, which is synchronous: every call runs in
``trio.to_thread``, one at a time per caller, under the S3 circuit breaker and ``kernel.retry_call``.

Uploads are multipart and streamed: the caller's chunks are gathered into parts of ``part_size`` (S3's floor is
5 MiB for every part but the last), so at most one part is in memory, and a part that fails is sent again as it
is (no restreaming). The upload is created while the source makes its first part. A failed upload (the source's
failure included) is aborted, so the bucket keeps no orphan parts.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio

from kernel import (
    NO_RETRY,
    BreakerConfig,
    CircuitBreaker,
    CircuitOpen,
    RetryAfter,
    RetryDecision,
    RetryPolicy,
    retry_call,
)

from ._errors import ExportsUnavailable

log = logging.getLogger("vigil.exports")

T = TypeVar("T")
MIN_PART_SIZE = 5 * 1024 * 1024  # S3: every part but the last is at least this big
_ENV = {
    "endpoint_url": "VIGIL_S3_ENDPOINT_URL",
    "bucket": "VIGIL_S3_BUCKET",
    "region": "VIGIL_S3_REGION",
    "access_key_id": "VIGIL_S3_ACCESS_KEY_ID",
    "secret_access_key": "VIGIL_S3_SECRET_ACCESS_KEY",
}


def default_s3_breaker_config() -> BreakerConfig:
    return BreakerConfig(window=60.0, min_calls=20, failure_rate=0.5, consecutive_failures=10, open_for=30.0,
                         half_open_probes=1)


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class S3Config:
    """Where exports and backups go. ``endpoint_url`` None: AWS itself (credentials may then come from the
    environment's usual chain, but Vigil asks for them explicitly)."""

    bucket: str
    access_key_id: str
    secret_access_key: str
    endpoint_url: str | None = None
    region: str = "us-east-1"
    part_size: int = 8 * 1024 * 1024
    parts_in_flight: int = 3  # parts uploading at once (each one in memory)
    presign_seconds: int = 3600  # how long a presigned export URL works
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(attempts=5, initial=0.5, cap=8.0))

    def __post_init__(self) -> None:
        if not self.bucket or not self.access_key_id or not self.secret_access_key:
            raise ValueError("bucket, access_key_id and secret_access_key are required")
        if self.part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes (S3's floor)")
        if self.parts_in_flight < 1:
            raise ValueError("parts_in_flight must be >= 1")
        if self.presign_seconds < 1 or self.presign_seconds > 7 * 24 * 3600:
            raise ValueError("presign_seconds must be within 1 s .. 7 days (SigV4's limit)")

    def __repr__(self) -> str:
        return (f"S3Config(bucket={self.bucket!r}, endpoint_url={self.endpoint_url!r}, region={self.region!r}, "
                f"access_key_id=<redacted>, secret_access_key=<redacted>)")

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> S3Config | None:
        """``VIGIL_S3_*``; None when the bucket or the credentials are unset (exports answer 503)."""
        values = {name: (environ.get(var) or "").strip() for name, var in _ENV.items()}
        if not (values["bucket"] and values["access_key_id"] and values["secret_access_key"]):
            return None
        return cls(bucket=values["bucket"], access_key_id=values["access_key_id"],
                   secret_access_key=values["secret_access_key"], endpoint_url=values["endpoint_url"] or None,
                   region=values["region"] or "us-east-1", **overrides)


def classify_s3(error: Exception) -> RetryDecision:
    """Connection trouble, throttling and 5xx are worth another try; a refused breaker, bad credentials, a
    missing bucket or key are not."""
    if isinstance(error, CircuitOpen):
        return NO_RETRY
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    if isinstance(error, ConnectionError | HTTPClientError):
        return RetryAfter()
    if isinstance(error, ClientError):
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        code = str(error.response.get("Error", {}).get("Code", ""))
        if status == 429 or status >= 500 or code in ("SlowDown", "RequestTimeout", "InternalError"):
            return RetryAfter()
    return NO_RETRY


def _first(group: BaseExceptionGroup[Exception]) -> Exception:
    leaf = group.exceptions[0]
    return _first(leaf) if isinstance(leaf, BaseExceptionGroup) else leaf


def describe(error: BaseException) -> str:
    """A failure's reason as users and operators read it (no credentials: botocore never puts them in)."""
    return f"{type(error).__name__}: {error}"


class Bucket:
    """One bucket of an S3-compatible store: streamed multipart uploads, streamed downloads, presigned URLs."""

    def __init__(self, config: S3Config, *, breaker: CircuitBreaker | None = None,
                 rng: random.Random | None = None,
                 on_retry: Callable[[int, float, Exception], None] | None = None) -> None:
        self.config = config
        self.breaker = breaker or CircuitBreaker("s3", default_s3_breaker_config())
        self._rng = rng or random.Random()
        self._client: Any = None
        self._lock = trio.Lock()  # the client is made once, in a thread (boto3's session setup is slow)
        self._on_retry = on_retry

    # -- plumbing ------------------------------------------------------------------------------------
    async def client(self) -> Any:
        async with self._lock:
            if self._client is None:
                self._client = await trio.to_thread.run_sync(self._make_client)
        return self._client

    def _make_client(self) -> Any:
        import boto3
        from botocore.config import Config

        cfg = self.config
        return boto3.session.Session().client(
            "s3", endpoint_url=cfg.endpoint_url, region_name=cfg.region, aws_access_key_id=cfg.access_key_id,
            aws_secret_access_key=cfg.secret_access_key,
            # Our retry_call is the only retry (botocore's own would multiply it); path style suits MinIO/moto.
            config=Config(retries={"total_max_attempts": 1}, connect_timeout=cfg.connect_timeout,
                          read_timeout=cfg.read_timeout, signature_version="s3v4",
                          s3={"addressing_style": "path"}))

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """One S3 call in a thread, under the breaker, retried per the policy."""
        client = await self.client()

        async def once() -> T:
            async with self.breaker.guard():
                return await trio.to_thread.run_sync(lambda: fn(client, *args, **kwargs))

        return await retry_call(once, policy=self.config.retry, classify=classify_s3, rng=self._rng,
                                on_retry=self._on_retry)

    def check_available(self) -> None:
        """ExportsUnavailable while the breaker refuses calls (so new work is refused, not queued to fail)."""
        snap = self.breaker.snapshot()
        if snap.state == "open":
            raise ExportsUnavailable("object storage is unavailable (circuit open)", retry_after=snap.retry_after)

    # -- objects --------------------------------------------------------------------------------------
    async def upload(self, key: str, chunks: AsyncIterable[bytes], *,
                     on_part: Callable[[int], None] | None = None) -> int:
        """Stream ``chunks`` to ``key`` as a multipart upload; returns the bytes stored. ``on_part(n)`` hears
        each part's size once it is stored (progress)."""
        bucket, part_size = self.config.bucket, self.config.part_size
        upload_id: str | None = None
        created = trio.Event()
        etags: dict[int, str] = {}
        total = 0
        # Up to ``parts_in_flight`` parts go out while the next one is read: the source (pg_dump, the export's
        # pages) keeps producing instead of waiting for each round trip. Memory: that many parts, plus one.
        slots = trio.Semaphore(self.config.parts_in_flight)

        async def create() -> None:
            # Beside the source's first part, not before it: making the client and the upload (~0.1-0.3 s on
            # a cold client) overlaps a database snapshot or query instead of delaying it.
            nonlocal upload_id
            answer = await self._call(lambda c: c.create_multipart_upload(Bucket=bucket, Key=key))
            upload_id = str(answer["UploadId"])
            created.set()

        async def send(number: int, body: bytes) -> None:
            try:
                await created.wait()
                assert upload_id is not None
                etags[number] = await self._part(key, upload_id, number, body)
                if on_part is not None:
                    on_part(len(body))
            finally:
                slots.release()

        try:
            try:
                failure: Exception | None = None
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(create)
                    buffer = bytearray()
                    number = 0
                    try:
                        async for chunk in chunks:
                            buffer += chunk
                            while len(buffer) >= part_size:
                                part = bytes(buffer[:part_size])
                                del buffer[:part_size]
                                number += 1
                                total += len(part)
                                await slots.acquire()
                                nursery.start_soon(send, number, part)
                        if buffer or number == 0:  # the last part may be small; an empty object is one empty part
                            number += 1
                            total += len(buffer)
                            await slots.acquire()
                            nursery.start_soon(send, number, bytes(buffer))
                            buffer.clear()
                    except Exception as exc:  # the source's: raised once ``create`` is done (it is aborted below)
                        failure = exc
                if failure is not None:
                    raise failure
            except ExceptionGroup as group:  # a part's own error, as if the parts had gone one by one
                raise _first(group) from None
            parts = [{"PartNumber": n, "ETag": etags[n]} for n in sorted(etags)]
            await self._call(lambda c: c.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}))
        except BaseException:
            if upload_id is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(5.0):
                    await self._abort(key, upload_id)
            raise
        return total

    async def _part(self, key: str, upload_id: str, number: int, body: bytes) -> str:
        bucket = self.config.bucket
        answer = await self._call(lambda c: c.upload_part(Bucket=bucket, Key=key, UploadId=upload_id,
                                                          PartNumber=number, Body=body))
        return str(answer["ETag"])

    async def _abort(self, key: str, upload_id: str) -> None:
        client = await self.client()
        try:
            await trio.to_thread.run_sync(lambda: client.abort_multipart_upload(
                Bucket=self.config.bucket, Key=key, UploadId=upload_id))
        except Exception as exc:  # the bucket's lifecycle rule cleans up what we could not
            log.warning("could not abort the multipart upload of %s: %s", key, describe(exc))

    async def size(self, key: str) -> int:
        head = await self._call(lambda c: c.head_object(Bucket=self.config.bucket, Key=key))
        return int(head["ContentLength"])

    async def download(self, key: str, *, chunk_size: int = 8 * 1024 * 1024) -> AsyncIterator[bytes]:
        """The object's bytes in chunks of at most ``chunk_size``, read as they are consumed."""
        got = await self._call(lambda c: c.get_object(Bucket=self.config.bucket, Key=key))
        body = got["Body"]
        try:
            while True:
                chunk = await trio.to_thread.run_sync(body.read, chunk_size)
                if not chunk:
                    return
                yield chunk
        finally:
            body.close()

    async def presign(self, key: str) -> str:
        """A GET URL for ``key`` valid for ``presign_seconds`` (signed locally: no request is made)."""
        client = await self.client()
        url = client.generate_presigned_url("get_object", Params={"Bucket": self.config.bucket, "Key": key},
                                            ExpiresIn=self.config.presign_seconds)
        return str(url)


__all__ = ["MIN_PART_SIZE", "Bucket", "S3Config", "classify_s3", "default_s3_breaker_config", "describe"]
