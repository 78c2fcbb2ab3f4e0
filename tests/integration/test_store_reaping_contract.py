"""What the reapers run (actors/maintenance), on both backends: finished ingest requests and recorded sync
operations past their retention, and checkpoints whose lease expired long ago. Each is bounded and leaves
everything younger (or unfinished) alone."""

from __future__ import annotations

import pytest

from storage import InvalidData, Store
from storage.testing import ManualClock
from tests.integration import test_store_readside_contract as readside
from tests.integration.test_store_readside_contract import ROLLUPS, USER, _get, cp

# The read side's fixtures: a store on a ManualClock, 30 s leases, 3 attempts.
clock, clocked = readside.clock, readside.clocked

OTHER = "other-handler"


async def test_purge_finished_ingest_requests_after_retention(clocked: Store, clock: ManualClock) -> None:
    async with clocked.transaction() as tx:
        for i in range(3):
            await tx.ingest.begin(USER, f"done-{i}", "h")
            await tx.ingest.complete(USER, f"done-{i}", {"inserted": i})
        await tx.ingest.begin(USER, "failed", "h")
        await tx.ingest.fail(USER, "failed", "boom")
        await tx.ingest.begin(USER, "stuck", "h")  # processing: the stale-claim reaper's, never purged
    clock.advance(3600)
    async with clocked.transaction() as tx:
        await tx.ingest.begin(USER, "recent", "h")
        await tx.ingest.complete(USER, "recent", {})
        assert await tx.ingest.purge_finished(7200) == 0
        assert await tx.ingest.purge_finished(1800, limit=2) == 2
        assert await tx.ingest.purge_finished(1800) == 2
        assert await tx.ingest.purge_finished(1800) == 0
        left = {r: await tx.ingest.get(USER, r) for r in ("done-0", "failed", "stuck", "recent")}
    assert {r for r, row in left.items() if row is not None} == {"stuck", "recent"}


async def test_purge_sync_operation_results_after_retention(clocked: Store, clock: ManualClock) -> None:
    async with clocked.transaction() as tx:
        await tx.sync_ops.record_many(USER, "phone", {"op-1": {"status": "applied"}, "op-2": {"status": "applied"}})
    clock.advance(3600)
    async with clocked.transaction() as tx:
        await tx.sync_ops.record_many(USER, "phone", {"op-3": {"status": "applied"}})
        assert await tx.sync_ops.purge(7200) == 0
        assert await tx.sync_ops.purge(1800, limit=1) == 1
        assert await tx.sync_ops.purge(1800) == 1
        assert await tx.sync_ops.purge(1800) == 0
        left = await tx.sync_ops.get_many(USER, "phone", ["op-1", "op-2", "op-3"])
    assert set(left) == {"op-3"}


async def test_reap_expired_leases_frees_or_buries_them(clocked: Store, clock: ManualClock) -> None:
    async with clocked.transaction() as tx:
        ids = [(await tx.outbox.enqueue(USER, "e", {"i": i})).id for i in range(3)]
        await tx.checkpoints.create_many([cp(i) for i in ids], owner="w")  # leased 30 s, attempt 1 of 3
    clock.advance(20)
    async with clocked.transaction() as tx:
        assert await tx.checkpoints.reap_expired(60) == 0  # not even expired
        await tx.checkpoints.renew("w", [(ids[2], ROLLUPS)])  # the live holder keeps this one
    clock.advance(75)  # ids[0], ids[1] expired 65 s ago; ids[2]'s lease expired 45 s ago
    async with clocked.transaction() as tx:
        assert await tx.checkpoints.reap_expired(60) == 2
        assert await tx.checkpoints.reap_expired(60) == 0
    freed = [await _get(clocked, i, ROLLUPS) for i in ids]
    assert [c.status for c in freed] == ["pending", "pending", "processing"]
    assert freed[0].lease_owner is None and freed[2].lease_owner == "w"
    # Claimed again until its last attempt, each time left to expire: then the reaper buries it, as claim would.
    async with clocked.transaction() as tx:
        event = (await tx.outbox.enqueue(USER, "e", {"i": "last"})).id
        await tx.checkpoints.create_many([cp(event, OTHER)], owner="w")  # attempt 1
    for attempt in (2, 3):
        clock.advance(100)
        async with clocked.transaction() as tx:
            assert await tx.checkpoints.reap_expired(60) >= 1
            (claimed,) = await tx.checkpoints.claim(OTHER, "w2", limit=1)
        assert claimed.attempts == attempt
    clock.advance(100)
    async with clocked.transaction() as tx:
        assert await tx.checkpoints.reap_expired(60) >= 1
    buried = await _get(clocked, event, OTHER)
    assert (buried.status, buried.lease_owner) == ("dead", None)
    async with clocked.transaction() as tx:
        with pytest.raises(InvalidData):
            tx.checkpoints.reap_expired(-1)
