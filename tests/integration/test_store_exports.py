"""The export jobs' repository, the same contract on both backends (the ``store`` fixture runs each test on
SQLite and on PostgreSQL): owner-scoped reads, leases taken once, expired leases claimed again, the outcome
recorded only by the lease holder."""

from __future__ import annotations

from dataclasses import replace

import pytest

from storage import InvalidData, Store, StoreConfig, UniqueViolation, open_store
from storage.testing import ManualClock

LEASE = 30.0


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
