"""The read side's sample queries (samples.for_projection, samples.sources) on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from storage import InvalidData, SampleIn, SampleKey, Store, StoreConfig, open_store
from storage.testing import ManualClock

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
USER = "user-1"


def steps(source: str, record: str, start: datetime, minutes: float, value: float = 10.0,
          metric: str = "steps") -> SampleIn:
    return SampleIn(source_id=source, source_record_id=record, metric=metric, value=value,
                    unit="count" if metric == "steps" else "bpm", start_at=start,
                    end_at=start + timedelta(minutes=minutes), metadata=None)


@pytest.fixture
async def clocked(store_url: str, store_config: StoreConfig) -> AsyncIterator[tuple[Store, ManualClock]]:
    clock = ManualClock(T0)
    async with open_store(store_url, config=replace(store_config, clock=clock)) as opened:
        yield opened, clock


async def test_for_projection_returns_live_overlapping_samples_in_start_order(store: Store) -> None:
    day = T0.replace(hour=0)
    rows = [
        steps("watch", "before", day - timedelta(hours=2), 60),  # ends 23:00 the day before: outside
        steps("watch", "across", day - timedelta(minutes=30), 60),  # crosses midnight: inside
        steps("phone", "inside", day + timedelta(hours=9), 5, value=3.5),
        steps("watch", "instant", day, 0),  # an instant at the window's start: inside
        steps("watch", "end", day + timedelta(days=1), 0),  # an instant at its end: outside
        steps("watch", "deleted", day + timedelta(hours=10), 5),
        steps("watch", "hr", day + timedelta(hours=11), 1, value=60.0, metric="heart_rate"),
        steps("watch", "long-ago", day - timedelta(days=3), 3 * 24 * 60 + 60),  # longer than the lookback
    ]
    async with store.transaction() as tx:
        await tx.samples.upsert_many(USER, rows)
        await tx.samples.upsert_many("someone-else", rows)
        await tx.samples.soft_delete_many(USER, [SampleKey("watch", "deleted", day + timedelta(hours=10))])
    async with store.transaction(readonly=True) as tx:
        (found,) = await tx.run(tx.samples.for_projection(USER, "steps", day, day + timedelta(days=1)))
        (wide,) = await tx.run(tx.samples.for_projection(USER, "steps", day, day + timedelta(days=1),
                                                          lookback=timedelta(days=4)))
    assert found == [
        ("watch", day - timedelta(minutes=30), day + timedelta(minutes=30), 10.0),
        ("watch", day, day, 10.0),
        ("phone", day + timedelta(hours=9), day + timedelta(hours=9, minutes=5), 3.5),
    ]
    assert all(start.utcoffset() == timedelta(0) for _, start, _, _ in found)
    assert [r[1] for r in wide] == [day - timedelta(days=3), *[r[1] for r in found]]


async def test_for_projection_checks_its_arguments(store: Store) -> None:
    async with store.transaction(readonly=True) as tx:
        with pytest.raises(InvalidData):
            tx.samples.for_projection(USER, "steps", datetime(2026, 1, 1), T0)  # naive


async def test_sources_come_in_first_seen_order_deleted_or_not(clocked: tuple[Store, ManualClock]) -> None:
    store, clock = clocked
    async with store.transaction(readonly=True) as tx:
        assert await tx.samples.sources(USER) == []
    for source in ("phone", "watch", "scale"):
        async with store.transaction() as tx:
            await tx.samples.upsert_many(USER, [steps(source, "r", T0, 1)])
        clock.advance(1.0)
    async with store.transaction() as tx:
        await tx.samples.upsert_many(USER, [steps("phone", "later", T0, 1)])  # seen again: still first
        await tx.samples.soft_delete_many(USER, [SampleKey("watch", "r", T0)])
        await tx.samples.upsert_many("someone-else", [steps("zzz", "r", T0, 1)])
    async with store.transaction(readonly=True) as tx:
        assert await tx.samples.sources(USER) == ["phone", "watch", "scale"]
