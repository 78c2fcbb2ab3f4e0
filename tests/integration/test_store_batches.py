"""The read side's batch operations answer exactly what their one-at-a-time forms answer, on SQLite and
PostgreSQL (PostgreSQL runs them as one set-based statement each; a mistake there would differ from here)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from storage import DailyRollup, SampleIn, Store, UserSettings

T0 = datetime(2026, 11, 24, tzinfo=UTC)


def row(user: str, source: str, record: str, start: datetime, minutes: int, value: float,
        metric: str = "steps") -> SampleIn:
    return SampleIn(source, record, metric, value, "count" if metric == "steps" else "bpm", start,
                    start + timedelta(minutes=minutes))


async def seed(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.run(tx.samples.upsert_many("ann", [row("ann", "phone", "a", T0, 30, 5.0),
                                                    row("ann", "watch", "b", T0 + timedelta(hours=1), 10, 7.0),
                                                    row("ann", "watch", "h", T0, 0, 61.0, "heart_rate")]))
        await tx.run(tx.samples.upsert_many("bob", [row("bob", "ring", "c", T0 + timedelta(days=1), 5, 3.0)]))
        await tx.commit(tx.users.put_settings("bob", UserSettings(timezone="Europe/Berlin",
                                                                  source_priority=("ring",))))


async def test_settings_and_sources_many_equal_one_at_a_time(store: Store) -> None:
    await seed(store)
    users = ["ann", "bob", "nobody"]
    async with store.transaction(readonly=True) as tx:
        settings, sources = await tx.run(tx.users.get_settings_many(users), tx.samples.sources_many(users))
        singles = await tx.run(*(tx.users.get_settings(u) for u in users))
        single_sources = await tx.run(*(tx.samples.sources(u) for u in users))
        (contexts,) = await tx.commit(tx.users.projection_contexts_many([*users, "ann"]))
    assert contexts == {u: (settings[u], sources[u]) for u in users}  # both, in one statement on PostgreSQL
    assert settings == dict(zip(users, singles, strict=True))
    assert settings["nobody"] == UserSettings() and settings["bob"].source_priority == ("ring",)
    assert sources == dict(zip(users, single_sources, strict=True))
    assert sources["ann"] == ["phone", "watch"] and sources["nobody"] == []


async def test_sample_windows_many_equal_one_at_a_time_in_order(store: Store) -> None:
    await seed(store)
    day = timedelta(days=1)
    wanted = [("bob", "steps", T0 + day, T0 + 2 * day), ("ann", "steps", T0, T0 + day),
              ("ann", "heart_rate", T0, T0 + day), ("ann", "steps", T0 + 5 * day, T0 + 6 * day)]
    async with store.transaction(readonly=True) as tx:
        (many,) = await tx.run(tx.samples.for_projection_many(wanted))
        singles = await tx.commit(*(tx.samples.for_projection(*w) for w in wanted))
    assert many == list(singles)
    assert [len(found) for found in many] == [1, 2, 1, 0]


async def test_replace_ranges_equals_replace_range(store: Store) -> None:
    def rollup(user: str, metric: str, day: date, total: float) -> DailyRollup:
        return DailyRollup(user, metric, day, "count", 1, total, total, total)

    d1, d2, d3 = date(2026, 11, 24), date(2026, 11, 25), date(2026, 11, 26)
    async with store.transaction() as tx:
        await tx.commit(tx.rollups.replace_range("ann", "steps", d1, d3, [rollup("ann", "steps", d, 1.0)
                                                                        for d in (d1, d2, d3)]),
                        tx.rollups.replace_range("bob", "steps", d1, d3, [rollup("bob", "steps", d1, 9.0)]))
    async with store.transaction() as tx:
        (written,) = await tx.commit(tx.rollups.replace_ranges([
            ("ann", "steps", d2, d3, [rollup("ann", "steps", d3, 5.0)]),  # d2 loses its row
            ("bob", "steps", d2, d2, [rollup("bob", "steps", d2, 4.0)]),
        ]))
    async with store.transaction(readonly=True) as tx:
        ann, bob = await tx.commit(tx.rollups.read("ann", "steps", d1, d3), tx.rollups.read("bob", "steps", d1, d3))
    assert written == 2
    assert [(r.local_date, r.sum) for r in ann] == [(d1, 1.0), (d3, 5.0)]
    assert [(r.local_date, r.sum) for r in bob] == [(d1, 9.0), (d2, 4.0)]


async def test_advance_many_equals_advance_per_user_out_of_order(store: Store) -> None:
    async with store.transaction() as tx:
        (marks,) = await tx.commit(tx.watermarks.advance_many("h", {"ann": [(2, 3)], "bob": [(0, 1), (1, 4)]}))
    assert marks == {"ann": 0, "bob": 4}  # ann's (2, 3] waits for (0, 2]
    async with store.transaction() as tx:
        await tx.run(tx.checkpoints.lock_users(["bob", "ann"], "h"))
        (marks,) = await tx.commit(tx.watermarks.advance_many("h", {"ann": [(0, 2)], "bob": [(2, 3)]}))
    assert marks == {"ann": 3, "bob": 4}
    async with store.transaction(readonly=True) as tx:
        ann, bob = await tx.commit(tx.watermarks.projected("ann", "h"), tx.watermarks.projected("bob", "h"))
    assert (ann, bob) == (3, 4)
