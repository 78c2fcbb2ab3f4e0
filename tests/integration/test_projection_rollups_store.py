"""DailyRollups and SleepNights projecting real stored samples, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from actors.projection import DailyRollups, Projection, SleepNights, UserWork
from storage import SampleIn, SampleKey, Store, UserSettings

USER = "user-1"
DAY = date(2026, 11, 3)
MIDNIGHT = datetime(2026, 11, 2, 23, 0, tzinfo=UTC)  # 00:00 on DAY in Berlin (CET)


def sample(source: str, record: str, start: datetime, minutes: float, value: float,
           metric: str = "steps") -> SampleIn:
    unit = {"steps": "count", "heart_rate": "bpm", "sleep_stage": "category"}[metric]
    return SampleIn(source_id=source, source_record_id=record, metric=metric, value=value, unit=unit,
                    start_at=start, end_at=start + timedelta(minutes=minutes), metadata=None)


def work(*keys: tuple[str, date], full: bool = False) -> UserWork:
    return UserWork(user_id=USER, checkpoints=(), keys=frozenset(keys), full=full)


async def project(store: Store, projection: Projection, unit: UserWork) -> None:
    async with store.transaction() as tx:
        await projection.project(tx, unit)  # defers its writes; leaving the block commits them


async def totals(store: Store, metric: str = "steps") -> dict[date, tuple[float, int]]:
    async with store.transaction(readonly=True) as tx:
        rows = await tx.rollups.read(USER, metric, DAY - timedelta(days=5), DAY + timedelta(days=5))
    return {r.local_date: (r.sum, r.count) for r in rows}


async def test_keyed_days_in_the_users_zone_with_overlaps_counted_once(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.users.put_settings(USER, UserSettings(timezone="Europe/Berlin"))
        # The phone is seen first, so (with no sourcePriority) it outranks the watch.
        await tx.samples.upsert_many(USER, [sample("phone", "p1", MIDNIGHT + timedelta(hours=8), 60, 600.0)])
    async with store.transaction() as tx:
        await tx.samples.upsert_many(USER, [
            sample("watch", "w1", MIDNIGHT + timedelta(hours=8, minutes=30), 60, 1000.0),  # half covered
            sample("watch", "w2", MIDNIGHT - timedelta(minutes=30), 60, 50.0),  # 23:30-00:30 local
            sample("watch", "hr", MIDNIGHT + timedelta(hours=1), 1, 70.0, metric="heart_rate"),
        ])
    await project(store, DailyRollups(), work(("steps", DAY), ("heart_rate", DAY)))
    assert await totals(store) == {DAY: (600.0 + 500.0 + 25.0, 3)}  # the day before was not asked for
    assert await totals(store, "heart_rate") == {DAY: (70.0, 1)}
    await project(store, DailyRollups(), work(("steps", DAY - timedelta(days=1)), ("steps", DAY)))
    assert await totals(store) == {DAY - timedelta(days=1): (25.0, 1), DAY: (1125.0, 3)}
    # Deleting the phone's sample: the watch's counts whole.
    async with store.transaction() as tx:
        await tx.samples.soft_delete_many(USER, [SampleKey("phone", "p1", MIDNIGHT + timedelta(hours=8))])
    await project(store, DailyRollups(), work(("steps", DAY)))
    assert await totals(store) == {DAY - timedelta(days=1): (25.0, 1), DAY: (1025.0, 2)}


async def test_full_work_recomputes_everything_and_drops_emptied_days(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.samples.upsert_many(USER, [sample("watch", "w1", MIDNIGHT - timedelta(minutes=30), 60, 50.0),
                                            sample("watch", "w2", MIDNIGHT + timedelta(days=2), 10, 7.0)])
    await project(store, DailyRollups(), work(full=True))
    # UTC (the default zone): 22:30-23:30 UTC is all on the day before.
    assert await totals(store) == {DAY - timedelta(days=1): (50.0, 1), DAY + timedelta(days=1): (7.0, 1)}
    async with store.transaction() as tx:
        await tx.users.put_settings(USER, UserSettings(timezone="Europe/Berlin"))
        await tx.samples.soft_delete_many(USER, [SampleKey("watch", "w2", MIDNIGHT + timedelta(days=2))])
    await project(store, DailyRollups(), work(full=True))
    assert await totals(store) == {DAY - timedelta(days=1): (25.0, 1), DAY: (25.0, 1)}


async def test_sleep_nights_keyed_and_full(store: Store) -> None:
    evening = MIDNIGHT - timedelta(hours=1)  # 23:00 local on the day before DAY
    async with store.transaction() as tx:
        await tx.users.put_settings(USER, UserSettings(timezone="Europe/Berlin"))
        await tx.samples.upsert_many(USER, [
            sample("watch", "s1", evening, 120, 4.0, metric="sleep_stage"),
            sample("watch", "s2", evening + timedelta(hours=2), 300, 3.0, metric="sleep_stage"),
            sample("watch", "nap", MIDNIGHT + timedelta(hours=14), 60, 1.0, metric="sleep_stage"),
        ])
    await project(store, SleepNights(), work(("sleep_stage", DAY)))
    async with store.transaction(readonly=True) as tx:
        nights = await tx.sleep.read(USER, DAY - timedelta(days=5), DAY + timedelta(days=5))
    assert [(n.night_date, n.asleep_minutes, dict(n.stages)) for n in nights] == [
        (DAY - timedelta(days=1), 420.0, {"core": 300.0, "deep": 120.0})]
    await project(store, SleepNights(), work(("steps", DAY)))  # no sleep keys: nothing to do
    async with store.transaction() as tx:
        await tx.samples.soft_delete_many(USER, [SampleKey("watch", "s1", evening),
                                                 SampleKey("watch", "s2", evening + timedelta(hours=2))])
    await project(store, SleepNights(), work(full=True))
    async with store.transaction(readonly=True) as tx:
        assert await tx.sleep.read(USER, DAY - timedelta(days=5), DAY + timedelta(days=5)) == []


def test_the_projections_subscribe_to_sample_and_settings_changes() -> None:
    for projection in (DailyRollups(), SleepNights()):
        assert projection.depends_on is None
        assert projection.subscribes("health.samples.changed") and projection.subscribes("user.settings.changed")
        assert not projection.subscribes("sync.changed")
    assert (DailyRollups().name, SleepNights().name) == ("daily_rollups", "sleep_nights")
