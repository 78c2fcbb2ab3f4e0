"""Storage additions of the sync domain, on both backends: operation ids unique per user, entities' client
clocks, the device and user locks of a push."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from storage import ChangeIn, InvalidData, Store, SyncEntity


async def test_operation_ids_are_unique_per_user_across_devices(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.sync_ops.record_many("u1", "phone", {"op-1": {"status": "applied"}})
        await tx.sync_ops.record_many("u1", "tablet", {"op-1": {"status": "other"}, "op-2": {"status": "x"}})
        await tx.sync_ops.record_many("u2", "phone", {"op-1": {"status": "theirs"}})
        mine = await tx.sync_ops.get_for_user("u1", ["op-1", "op-2", "op-3"])
        theirs = await tx.sync_ops.get_for_user("u2", ["op-1"])
        none = await tx.sync_ops.get_for_user("u1", [])
    assert mine == {"op-1": {"status": "applied"}, "op-2": {"status": "x"}}
    assert theirs == {"op-1": {"status": "theirs"}} and none == {}


async def test_entities_keep_the_clients_clock_of_their_last_write(store: Store) -> None:
    at = datetime(2026, 11, 24, 9, 30, tzinfo=timezone(timedelta(hours=1)))
    async with store.transaction() as tx:
        await tx.entities.put_many([SyncEntity("u1", "goal", "g1", 1, {"a": 1}, client_ts=at),
                                    SyncEntity("u1", "goal", "g2", 1, {"a": 2})])
        got = await tx.entities.get_many("u1", [("goal", "g1"), ("goal", "g2")])
        with pytest.raises(InvalidData):
            tx.entities.put(SyncEntity("u1", "goal", "g3", 1, {}, client_ts=datetime(2026, 1, 1)))
    assert got[("goal", "g1")].client_ts == at.astimezone(UTC)
    assert got[("goal", "g2")].client_ts is None


async def test_a_push_locks_its_device_then_its_users_change_log(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.devices.lock("u1", "phone")
        assert await tx.changes.lock_user("u1") == 0
        await tx.changes.append_many("u1", [ChangeIn("goal", "g1", "create", 1, {})])
    async with store.transaction() as tx:
        await tx.devices.lock("u1", "phone")  # released with the transaction: taken again at once
        assert await tx.changes.lock_user("u1") == 1
        assert await tx.changes.latest_seq("u1") == 1  # locking moves nothing


async def test_a_device_lock_held_elsewhere_is_not_taken_by_try_lock(store: Store) -> None:
    async with store.transaction() as holder:
        await holder.devices.lock("u1", "phone")
        async with store.transaction() as other:
            # PostgreSQL: held by the other transaction. SQLite: no advisory locks (its one writer serializes).
            assert await other.devices.try_lock("u1", "phone") is (store.backend == "sqlite")
            assert await other.devices.try_lock("u1", "tablet") is True
            await other.rollback()
