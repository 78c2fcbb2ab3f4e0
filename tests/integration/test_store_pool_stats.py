"""``Store.pool_stats()`` (what /metrics shows of the pool) on both backends: a unit of work holds a
connection while it runs and gives it back when it ends."""

from __future__ import annotations

from storage import PoolStats, Store


async def test_a_unit_of_work_holds_a_connection_until_it_ends(store: Store) -> None:
    idle = store.pool_stats()
    assert isinstance(idle, PoolStats)
    assert idle.in_use == 0 and 1 <= idle.open <= idle.max_size
    async with store.transaction() as tx:
        await tx.users.get_settings("ann")
        busy = store.pool_stats()
        assert busy.in_use == 1 and busy.open >= 1 and busy.in_use <= busy.max_size
    assert store.pool_stats().in_use == 0
    if store.backend == "postgresql":
        assert idle.max_size == store.config.pg_max_size
