"""The export jobs' repository, the same contract on both backends (the ``store`` fixture runs each test on
SQLite and on PostgreSQL): owner-scoped reads, leases taken once, expired leases claimed again, the outcome
recorded only by the lease holder."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from storage import InvalidData, SampleKey, SampleRecord, Store, StoreConfig, UniqueViolation, open_store
from storage.testing import ManualClock
from tests.exports_helpers import samples_for

LEASE = 30.0


def from_micros(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


@pytest.fixture
async def clocked(store_url: str, store_config: StoreConfig):  # type: ignore[no-untyped-def]
    clock = ManualClock()
    async with open_store(store_url, config=replace(store_config, clock=clock)) as opened:
        yield opened, clock


async def _create(store: Store, user: str, export_id: str) -> None:
    async with store.transaction() as tx:
        await tx.commit(tx.exports.create(user, export_id))


async def _claim(store: Store, owner: str, *, max_attempts: int = 3, limit: int = 10) -> list[str]:
    async with store.transaction() as tx:
        (jobs,) = await tx.commit(tx.exports.claim(owner, lease_seconds=LEASE, max_attempts=max_attempts,
                                                   limit=limit))
    return [j.id for j in jobs]


async def test_a_job_is_read_only_by_its_owner(store: Store) -> None:
    async with store.transaction() as tx:
        (job,) = await tx.commit(tx.exports.create("alice", "x1"))
    assert (job.id, job.user_id, job.status, job.attempts, job.object_key) == ("x1", "alice", "pending", 0, None)
    async with store.transaction(readonly=True) as tx:
        mine, theirs, missing = await tx.commit(tx.exports.get("alice", "x1"), tx.exports.get("bob", "x1"),
                                                tx.exports.get("alice", "nope"))
    assert mine == job and theirs is None and missing is None


async def test_an_id_is_used_once(store: Store) -> None:
    await _create(store, "alice", "x1")
    with pytest.raises(UniqueViolation):
        await _create(store, "bob", "x1")
    with pytest.raises(InvalidData):
        async with store.transaction() as tx:
            await tx.commit(tx.exports.create("alice", ""))


async def test_claims_lease_each_job_once_oldest_first(clocked) -> None:  # type: ignore[no-untyped-def]
    store, clock = clocked
    await _create(store, "alice", "a")
    clock.advance(1)
    await _create(store, "bob", "b")
    assert await _claim(store, "w1", limit=1) == ["a"]
    assert await _claim(store, "w2") == ["b"]
    assert await _claim(store, "w3") == []
    async with store.transaction(readonly=True) as tx:
        (job,) = await tx.commit(tx.exports.get("alice", "a"))
    assert job is not None and (job.status, job.lease_owner, job.attempts) == ("running", "w1", 1)


async def test_an_expired_lease_is_claimed_again_then_fails_on_the_last_attempt(clocked) -> None:  # type: ignore[no-untyped-def]
    store, clock = clocked
    await _create(store, "alice", "a")
    assert await _claim(store, "crashed", max_attempts=2) == ["a"]
    clock.advance(LEASE - 1)
    assert await _claim(store, "w2", max_attempts=2) == []  # still held
    clock.advance(2)
    assert await _claim(store, "w2", max_attempts=2) == ["a"]  # the crashed worker's job, again
    async with store.transaction() as tx:
        (renewed,) = await tx.commit(tx.exports.renew("crashed", "a", lease_seconds=LEASE))
    assert renewed is False  # the old holder lost it
    clock.advance(LEASE + 1)
    assert await _claim(store, "w3", max_attempts=2) == []  # second claim was the last attempt
    async with store.transaction(readonly=True) as tx:
        (job,) = await tx.commit(tx.exports.get("alice", "a"))
    assert job is not None and job.status == "failed" and job.error is not None and "lease expired" in job.error


async def test_only_the_holder_records_the_outcome(clocked) -> None:  # type: ignore[no-untyped-def]
    store, clock = clocked
    await _create(store, "alice", "a")
    await _create(store, "alice", "b")
    assert await _claim(store, "w1") == ["a", "b"]
    async with store.transaction() as tx:
        stranger, done, renewed, failed = await tx.commit(
            tx.exports.complete("w2", "a", object_key="k", rows=1, size=2),
            tx.exports.complete("w1", "a", object_key="exports/a.jsonl.gz", rows=10, size=99),
            tx.exports.renew("w1", "b", lease_seconds=LEASE),
            tx.exports.fail("w1", "b", "upload failed after 5 attempts: boom"))
    assert (stranger, done, renewed, failed) == (False, True, True, True)
    async with store.transaction(readonly=True) as tx:
        a, b = await tx.commit(tx.exports.get("alice", "a"), tx.exports.get("alice", "b"))
    assert a is not None and (a.status, a.object_key, a.rows, a.bytes, a.lease_owner) == (
        "completed", "exports/a.jsonl.gz", 10, 99, None)
    assert b is not None and (b.status, b.error) == ("failed", "upload failed after 5 attempts: boom")
    clock.advance(LEASE * 10)
    assert await _claim(store, "w3") == []  # finished jobs are never claimed again


async def test_dump_pages_a_users_live_samples_as_plain_values(store: Store) -> None:
    rows = samples_for(5)
    async with store.transaction() as tx:
        await tx.commit(tx.samples.upsert_many("alice", rows), tx.samples.upsert_many("bob", samples_for(2)))
    async with store.transaction() as tx:
        await tx.commit(tx.samples.soft_delete_many("alice", [SampleKey(rows[1].source_id, rows[1].source_record_id,
                                                                        rows[1].start_at)]))
    records: list[SampleRecord] = []
    after = None
    pages = 0
    while True:
        async with store.transaction(readonly=True) as tx:
            ((page, after),) = await tx.commit(tx.samples.dump("alice", after=after, limit=2))
        records += page
        pages += 1
        if after is None:
            break
    async with store.transaction(readonly=True) as tx:
        (live,) = await tx.commit(tx.samples.query("alice", limit=100))
    assert pages == 3 and len(records) == 4  # the deleted one is not there, nor bob's
    assert [(r.id, r.source_id, r.source_record_id, r.metric, r.value, r.unit, from_micros(r.start_us),
             from_micros(r.end_us), json.loads(r.metadata_json), r.revision, from_micros(r.updated_us))
            for r in records] == [(s.id, s.source_id, s.source_record_id, s.metric, s.value, s.unit, s.start_at,
                                   s.end_at, s.metadata, s.revision, s.updated_at) for s in live.items]
