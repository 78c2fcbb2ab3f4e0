"""Exports through HTTP (API.md "AI and exports"): POST /v1/exports → 202, the worker streams the user's data to
S3 (moto's server, in its own process on loopback), GET /v1/exports/{id} → the status and a presigned URL.

The whole application in-process over a temp SQLite store (``running_app``) on trio's real clock; each test
waits for what it needs under ``fail_after``.
"""

from __future__ import annotations

import gc
import gzip
import json
import os
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from actors.exports import ExportsConfig, S3Config, WorkerConfig, default_s3_breaker_config
from kernel import CircuitBreaker
from storage import StoreConfig
from storage.testing import ManualClock
from tests.exports_helpers import MotoServer, closed_endpoint, moto_server, samples_for, seed
from tests.ingest_helpers import Harness, error_of, fast_tree_config, headers, running_app

EXPORTS = "/v1/exports"


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with moto_server() as server:
        yield server


def config(s3: S3Config | None, **worker: Any) -> Any:
    return fast_tree_config(tree={"exports": ExportsConfig(
        s3=s3, worker=WorkerConfig(poll_interval=worker.pop("poll_interval", 0.05), **worker))})


async def request_export(h: Harness, user: str = "alice") -> str:
    response = await h.client.post(EXPORTS, headers=headers(user))
    body = await response.get_json()
    assert response.status_code == 202, body
    assert body["status"] == "pending" and response.headers["Location"] == f"{EXPORTS}/{body['exportId']}"
    return str(body["exportId"])


async def until_done(h: Harness, export_id: str, *, user: str = "alice", timeout: float = 30.0) -> dict[str, Any]:
    body: Any = None
    with trio.move_on_after(timeout):
        while True:
            status, body = await h.get(f"{EXPORTS}/{export_id}", user=user)
            assert status == 200, body
            if body["status"] in ("completed", "failed"):
                return dict(body)
            await trio.sleep(0.02)
    raise AssertionError(f"export {export_id} never finished; last body: {body}")


async def fetch_lines(url: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as client:  # the presigned URL, as any HTTP client would use it
        response = await client.get(url)
    assert response.status_code == 200, response.text[:500]
    return [json.loads(line) for line in gzip.decompress(response.content).splitlines()]


async def test_an_export_of_100k_samples_streams_with_bounded_memory_and_equals_what_was_ingested(
        tmp_path: Path, moto: MotoServer) -> None:
    n = 100_000
    s3 = moto.new_bucket()
    async with running_app(tmp_path, config=config(s3, page_size=2_000, gzip_level=1)) as h:
        await seed(h.store, "alice", n, entities=3)
        await seed(h.store, "bob", 5, entities=0)  # someone else's data never appears in alice's export
        seeded = trio.current_time()
        gc.collect()
        baseline = rss_bytes()
        peak = baseline
        async with trio.open_nursery() as nursery:
            async def watch() -> None:
                nonlocal peak
                while True:
                    peak = max(peak, rss_bytes())
                    await trio.sleep(0.005)

            nursery.start_soon(watch)
            with trio.fail_after(60):
                export_id = await request_export(h)
                body = await until_done(h, export_id, timeout=60)
            nursery.cancel_scope.cancel()
        print(f"export took {trio.current_time() - seeded:.1f} s, RSS growth {(peak - baseline) / 1e6:.1f} MB")
        assert body["status"] == "completed", body
        assert body["rows"] == n + 3 and body["error"] is None
        assert body["url"] and body["urlExpiresAt"]
        lines = await fetch_lines(body["url"])
    samples = [line for line in lines if line["kind"] == "sample"]
    entities = [line for line in lines if line["kind"] == "entity"]
    expected = samples_for(n)
    assert len(samples) == n and len(entities) == 3
    assert [(s["sourceId"], s["sourceRecordId"], s["metric"], s["value"], s["unit"], s["startAt"], s["endAt"],
             s["metadata"]) for s in samples] == [
        (e.source_id, e.source_record_id, e.metric, e.value, e.unit, iso(e.start_at), iso(e.end_at),
         dict(e.metadata or {})) for e in expected]
    assert [(e["entityType"], e["entityId"], e["data"]) for e in entities] == [
        ("journal", f"e{i}", {"text": f"entry {i}"}) for i in range(3)]
    raw = sum(len(json.dumps(line)) + 1 for line in lines)
    # Bounded: one page, the compressor and one 5 MiB part (and its copy) at a time, never the export.
    assert raw > 25_000_000
    assert peak - baseline < 24_000_000, f"RSS grew {(peak - baseline) / 1e6:.1f} MB exporting {raw / 1e6:.1f} MB"


async def test_only_the_owner_sees_an_export(tmp_path: Path, moto: MotoServer) -> None:
    async with running_app(tmp_path, config=config(moto.new_bucket())) as h:
        await seed(h.store, "alice", 10, entities=0)
        export_id = await request_export(h)
        with trio.fail_after(20):
            done = await until_done(h, export_id)
        assert done["status"] == "completed" and done["rows"] == 10
        status, body = await h.get(f"{EXPORTS}/{export_id}", user="mallory")
        error_of(status, body, "NOT_FOUND", 404)
        status, body = await h.get(f"{EXPORTS}/{uuid.uuid4()}")
        error_of(status, body, "NOT_FOUND", 404)
        status, body = await h.get(f"{EXPORTS}/not-an-id")
        error_of(status, body, "NOT_FOUND", 404)
        response = await h.client.get(f"{EXPORTS}/{export_id}")  # no token
        assert response.status_code == 401


async def test_without_object_storage_exports_are_unavailable(tmp_path: Path) -> None:
    async with running_app(tmp_path, config=config(None)) as h:
        response = await h.client.post(EXPORTS, headers=headers())
        body = await response.get_json()
        error_of(response.status_code, body, "EXPORTS_UNAVAILABLE", 503)
        assert body["error"]["retryable"] is True


async def test_object_storage_down_retries_then_fails_with_a_reason_and_the_api_stays_healthy(
        tmp_path: Path, moto: MotoServer) -> None:
    down = S3Config(bucket="gone", access_key_id="k", secret_access_key="s", endpoint_url=closed_endpoint(),
                    retry=moto.new_bucket().retry, connect_timeout=0.5)
    breaker = CircuitBreaker("s3", default_s3_breaker_config())
    async with running_app(tmp_path, config=config(down), s3_breaker=breaker) as h:
        await seed(h.store, "alice", 10, entities=0)
        export_id = await request_export(h)
        with trio.fail_after(20):
            done = await until_done(h, export_id)
        assert done["status"] == "failed" and done["url"] is None
        assert done["error"].startswith("upload failed after 5 attempts: EndpointConnectionError"), done
        assert breaker.snapshot().failures == 5  # every attempt went out, through the breaker
        response = await h.client.get("/health")
        assert response.status_code == 200, await response.get_json()
        status, _ = await h.get("/v1/users/me/settings")
        assert status == 200


async def test_an_open_breaker_refuses_new_exports(tmp_path: Path, moto: MotoServer) -> None:
    breaker = CircuitBreaker("s3", default_s3_breaker_config())
    async with running_app(tmp_path, config=config(moto.new_bucket()), s3_breaker=breaker) as h:
        for _ in range(breaker.config.consecutive_failures):
            breaker.record_failure()
        response = await h.client.post(EXPORTS, headers=headers())
        body = await response.get_json()
        error_of(response.status_code, body, "EXPORTS_UNAVAILABLE", 503)
        assert body["error"]["retryAfterMs"] >= 1000


async def test_a_crashed_workers_export_is_picked_up_again(tmp_path: Path, moto: MotoServer) -> None:
    clock = ManualClock()
    lease = 30.0
    async with running_app(tmp_path, config=config(moto.new_bucket(), poll_interval=None, lease_seconds=lease),
                           store_config=StoreConfig(clock=clock)) as h:
        await seed(h.store, "alice", 20, entities=0)
        async with h.store.transaction() as tx:  # a job some worker claimed, then died with
            await tx.commit(tx.exports.create("alice", "00000000-0000-4000-8000-000000000001"))
        async with h.store.transaction() as tx:
            (claimed,) = await tx.commit(tx.exports.claim("dead-worker", lease_seconds=lease, max_attempts=3))
        assert [j.id for j in claimed] == ["00000000-0000-4000-8000-000000000001"]
        await h.services.exports.run_due()
        await trio.sleep(0.2)
        status, body = await h.get(f"{EXPORTS}/{claimed[0].id}")
        assert status == 200 and body["status"] == "running"  # still leased to the dead worker
        clock.advance(lease + 1)
        await h.services.exports.run_due()
        with trio.fail_after(20):
            done = await until_done(h, claimed[0].id)
        assert done["status"] == "completed" and done["rows"] == 20
        async with h.store.transaction(readonly=True) as tx:
            (job,) = await tx.commit(tx.exports.get("alice", claimed[0].id))
        assert job is not None and job.attempts == 2
