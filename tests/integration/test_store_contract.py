"""The storage contract, run against SQLite and the real PostgreSQL (see conftest)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

from storage import (
    Change,
    ChangeIn,
    ConflictError,
    DailyRollup,
    DeletedSamples,
    InvalidData,
    NotFound,
    OutboxPolicy,
    OutboxStats,
    SampleCursor,
    SampleIn,
    SampleKey,
    SleepNight,
    Store,
    StoreConfig,
    StoreError,
    SyncEntity,
    UniqueViolation,
    UpsertCounts,
    UserSettings,
    open_store,
)
from storage._migrations.postgres import MIGRATIONS as POSTGRES_MIGRATIONS
from storage._migrations.sqlite import MIGRATIONS as SQLITE_MIGRATIONS
from storage._sql import execute
from storage._tx import Op
from storage.testing import ManualClock

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
USER = "user-1"


def sample(
    i: int, *, value: float = 60.0, metric: str = "heart_rate", unit: str = "bpm", **extra: Any
) -> SampleIn:
    start = T0 + timedelta(minutes=i)
    fields: dict[str, Any] = {
        "source_id": "watch",
        "source_record_id": f"r{i}",
        "metric": metric,
        "value": value,
        "unit": unit,
        "start_at": start,
        "end_at": start + timedelta(seconds=30),
        "metadata": None,
    }
    fields.update(extra)
    return SampleIn(**fields)


def key(i: int) -> SampleKey:
    return SampleKey("watch", f"r{i}", T0 + timedelta(minutes=i))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
async def clocked(store_url: str, store_config: StoreConfig, clock: ManualClock) -> AsyncIterator[Store]:
    """A store on the test's ManualClock, with a short deterministic outbox schedule."""
    config = replace(
        store_config,
        clock=clock,
        outbox=OutboxPolicy(lease_seconds=30, max_attempts=3, base_delay=10, max_delay=100, jitter=0.0),
    )
    async with open_store(store_url, config=config) as opened:
        yield opened


async def all_samples(store: Store, **kw: Any) -> list[Any]:
    async with store.transaction(readonly=True) as tx:
        page = await tx.samples.query(USER, limit=10_000, **kw)
    return page.items


# --- health samples ----------------------------------------------------------------------


async def test_upsert_counts_inserts_and_updates(store: Store) -> None:
    async with store.transaction() as tx:
        first = await tx.samples.upsert_many(USER, [sample(0), sample(1), sample(2)])
    assert first == UpsertCounts(inserted=3, updated=0)
    async with store.transaction() as tx:
        (second,) = await tx.commit(
            tx.samples.upsert_many(USER, [sample(1, value=70.5), sample(2), sample(3)])
        )
    assert second == UpsertCounts(inserted=1, updated=2)
    rows = {s.source_record_id: s for s in await all_samples(store)}
    assert len(rows) == 4
    assert rows["r1"].value == 70.5 and rows["r1"].revision == 2 and rows["r0"].revision == 1
    assert rows["r1"].start_at == T0 + timedelta(minutes=1) and rows["r1"].start_at.tzinfo is not None


async def test_repeated_key_in_one_batch_counts_once_and_last_wins(store: Store) -> None:
    async with store.transaction() as tx:
        counts = await tx.samples.upsert_many(USER, [sample(0, value=1.0), sample(0, value=2.0)])
    assert counts == UpsertCounts(1, 0)
    (only,) = await all_samples(store)
    assert only.value == 2.0


async def test_identity_is_the_instant_not_the_offset(store: Store) -> None:
    plus_two = timezone(timedelta(hours=2))
    local = sample(
        0, start_at=T0.astimezone(plus_two), end_at=(T0 + timedelta(seconds=30)).astimezone(plus_two)
    )
    async with store.transaction() as tx:
        a = await tx.samples.upsert_many(USER, [sample(0)])
        b = await tx.samples.upsert_many(USER, [local])
        stored = await tx.samples.get(USER, key(0))
    assert (a.inserted, b.updated) == (1, 1)
    assert stored is not None and stored.start_at == T0 and stored.start_at.utcoffset() == timedelta(0)


async def test_prepared_samples_write_exactly_what_plain_rows_write(store: Store) -> None:
    rows = [sample(0, metadata={"device": "Watch7,1"}), sample(1), sample(1, value=61.5), sample(2)]
    prepared = store.prepare_samples(rows)
    assert len(prepared) == 3  # the repeated key collapsed, as upsert_many does
    async with store.transaction() as tx:
        assert await tx.samples.upsert_many(USER, prepared) == UpsertCounts(3, 0)
        # A rerun unit of work may hand the same prepared rows in again.
        assert await tx.samples.upsert_many(USER, prepared) == UpsertCounts(0, 3)
    stored = await all_samples(store)
    async with store.transaction() as tx:
        await tx.samples.upsert_many("user-2", rows)
        plain = (await tx.samples.query("user-2", limit=100)).items
    assert [(s.source_record_id, s.value, s.start_at, s.end_at, s.metadata) for s in stored] == [
        (s.source_record_id, s.value, s.start_at, s.end_at, s.metadata) for s in plain]
    assert stored[1].value == 61.5 and stored[0].metadata == {"device": "Watch7,1"}


async def test_preparing_refuses_what_upsert_refuses_and_stores_nothing(store: Store) -> None:
    with pytest.raises(InvalidData) as caught:
        store.prepare_samples([sample(0), sample(1, value=float("nan"))])
    assert caught.value.field == "samples[1].value"
    assert await all_samples(store) == []


async def test_samples_prepared_for_another_store_are_refused(store: Store) -> None:
    other_limits = replace(store.config.limits, max_id_chars=17)
    async with open_store("sqlite:///:memory:", config=StoreConfig(limits=other_limits)) as other:
        foreign = other.prepare_samples([sample(0)])
        with pytest.raises(InvalidData, match="prepare them with the store that writes them"):
            async with store.transaction() as tx:
                await tx.samples.upsert_many(USER, foreign)
    assert await all_samples(store) == []


async def test_users_do_not_see_each_other(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.samples.upsert_many("someone-else", [sample(0)])
    assert await all_samples(store) == []


async def test_query_pages_with_keyset_cursor(store: Store) -> None:
    rows = [sample(i, metric="steps", unit="count") if i % 3 == 0 else sample(i) for i in range(40)]
    async with store.transaction() as tx:
        await tx.samples.upsert_many(USER, rows)
    seen: list[str] = []
    cursor: SampleCursor | None = None
    pages = 0
    while True:
        async with store.transaction(readonly=True) as tx:
            page = await tx.samples.query(
                USER,
                metric="heart_rate",
                start=T0 + timedelta(minutes=5),
                end=T0 + timedelta(minutes=35),
                after=cursor,
                limit=6,
            )
        pages += 1
        seen += [s.source_record_id for s in page.items]
        if page.next_cursor is None:
            break
        cursor = SampleCursor.decode(page.next_cursor.encode())  # the opaque round trip
    expected = [f"r{i}" for i in range(5, 35) if i % 3 != 0]
    assert seen == expected
    assert pages == math.ceil(len(expected) / 6)


async def test_soft_delete_hides_and_a_later_upsert_is_refused(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.samples.upsert_many(USER, [sample(0), sample(1), sample(2)])
        deleted = await tx.samples.soft_delete_many(USER, [key(1), key(2), key(99), key(1)])
    assert (deleted.deleted, deleted.tombstones) == (2, 1)  # r99 never arrived: a tombstone, no change
    assert sorted(deleted.touched) == [
        ("heart_rate", T0 + timedelta(minutes=1)),
        ("heart_rate", T0 + timedelta(minutes=2)),
    ]
    assert [s.source_record_id for s in await all_samples(store)] == ["r0"]
    gone = [s for s in await all_samples(store, include_deleted=True) if s.deleted_at is not None]
    assert sorted(s.source_record_id for s in gone) == ["r1", "r2"]  # the tombstone is no sample
    async with store.transaction() as tx:
        again = await tx.samples.soft_delete_many(USER, [key(1), key(99)])
        refused = await tx.samples.upsert_many(USER, [sample(0, value=61.0), sample(1, value=99.0)])
        r1 = await tx.samples.get(USER, key(1))
    assert again == DeletedSamples(0, (), 0)
    assert refused == UpsertCounts(0, 1, (1,))
    assert r1 is not None and r1.deleted_at is not None and r1.value == 60.0 and r1.revision == 2
    assert [(s.source_record_id, s.value) for s in await all_samples(store)] == [("r0", 61.0)]


async def test_a_deletion_before_its_sample_keeps_a_tombstone_that_refuses_it(store: Store) -> None:
    """Lanes are not ordered with each other: the deletion may come first (API.md, ingestion)."""
    async with store.transaction() as tx:
        early = await tx.samples.soft_delete_many(USER, [key(5)])
        assert await tx.samples.get(USER, key(5)) is None
    assert early == DeletedSamples(0, (), 1)
    assert await all_samples(store, include_deleted=True) == []
    # Out of key order on purpose: PostgreSQL sorts the rows, the indices are still the caller's.
    rows = [sample(9), sample(5, value=70.0), sample(1)]
    async with store.transaction() as tx:
        counts = await tx.samples.upsert_many(USER, rows)
        again = await tx.samples.upsert_many(USER, store.prepare_samples(rows))
        alone = await tx.samples.upsert_many(USER, [sample(5)])  # every row refused: nothing came back
        assert await tx.samples.get(USER, key(5)) is None
    assert counts == UpsertCounts(2, 0, (1,))
    assert again == UpsertCounts(0, 2, (1,))
    assert alone == UpsertCounts(0, 0, (0,))
    assert [s.source_record_id for s in await all_samples(store, include_deleted=True)] == ["r1", "r9"]
    assert len(await all_samples(store, metric="heart_rate", include_deleted=True)) == 2
    with pytest.raises(InvalidData, match="metric"):  # the tombstones' marker cannot even be asked for
        await all_samples(store, metric="", include_deleted=True)


async def test_refused_indices_across_chunks_and_repeats(store: Store) -> None:
    """Past SQLite's 500-row statements; a repeated key counts once, its index is the remaining row's."""
    rows = [sample(i) for i in reversed(range(1200))]  # index 0 is r1199
    async with store.transaction() as tx:
        await tx.samples.soft_delete_many(USER, [key(1199), key(499), key(0)])
        counts = await tx.samples.upsert_many(USER, rows)
        repeated = await tx.samples.upsert_many(USER, [sample(0), sample(3), sample(0, value=1.0)])
    assert counts == UpsertCounts(1197, 0, (0, 700, 1199))
    assert repeated == UpsertCounts(0, 1, (0,))  # sample(0) twice: one row, where it first was
    assert len(await all_samples(store)) == 1197


async def test_purge_deleted_after_retention(clocked: Store, clock: ManualClock) -> None:
    async with clocked.transaction() as tx:
        await tx.samples.upsert_many(USER, [sample(0), sample(1)])
        await tx.samples.soft_delete_many(USER, [key(0), key(7)])  # r7: a tombstone, nothing to purge
    clock.advance(3600)
    async with clocked.transaction() as tx:
        assert await tx.samples.purge_deleted(7200) == 0
        assert await tx.samples.purge_deleted(1800) == 1
        assert await tx.samples.purge_deleted(1800) == 0  # a purged row is a tombstone now
        assert await tx.samples.get(USER, key(0)) is None
        assert await tx.samples.get(USER, key(1)) is not None
    assert [s.source_record_id for s in await all_samples(clocked, include_deleted=True)] == ["r1"]
    # The identity outlives its payload: the late sample is still refused.
    async with clocked.transaction() as tx:
        late = await tx.samples.upsert_many(USER, [sample(7), sample(0), sample(2)])
        assert await tx.samples.get(USER, key(0)) is None
    assert late == UpsertCounts(1, 0, (0, 1))


async def test_empty_batches_do_nothing(store: Store) -> None:
    async with store.transaction() as tx:
        assert await tx.samples.upsert_many(USER, []) == UpsertCounts(0, 0)
        assert (await tx.samples.soft_delete_many(USER, [])).deleted == 0
        assert await tx.changes.append_many(USER, []) == []
        assert await tx.rollups.upsert_many([]) == 0


# --- bad data ----------------------------------------------------------------------------

NAIVE = datetime(2026, 11, 24, 8, 0)


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (sample(0, value=float("nan")), "samples[0].value"),
        (sample(0, value=float("inf")), "samples[0].value"),
        (sample(0, value=-math.inf), "samples[0].value"),
        (sample(0, value="61"), "samples[0].value"),
        (sample(0, value=True), "samples[0].value"),
        (sample(0, start_at=NAIVE, end_at=NAIVE), "samples[0].start_at"),
        (sample(0, end_at=NAIVE), "samples[0].end_at"),
        (sample(0, end_at=T0 - timedelta(seconds=1)), "samples[0].end_at"),
        (sample(0, source_id="x" * 257), "samples[0].source_id"),
        (sample(0, source_record_id=""), "samples[0].source_record_id"),
        (sample(0, source_record_id="a\x00b"), "samples[0].source_record_id"),
        (sample(0, metric="m" * 65), "samples[0].metric"),
        (sample(0, unit=None), "samples[0].unit"),
        (sample(0, metadata=[1, 2]), "samples[0].metadata"),
        (sample(0, metadata={"x": float("nan")}), "samples[0].metadata"),
        (sample(0, metadata={"x": object()}), "samples[0].metadata"),
        (sample(0, metadata={"blob": "x" * 300_000}), "samples[0].metadata"),
    ],
)
async def test_bad_samples_are_refused_and_never_stored(store: Store, bad: SampleIn, field: str) -> None:
    with pytest.raises(InvalidData) as caught:
        async with store.transaction() as tx:
            await tx.samples.upsert_many(USER, [sample(5), bad])
    assert caught.value.field == field.replace("[0]", "[1]")
    assert await all_samples(store) == []


async def test_bad_data_is_refused_everywhere(store: Store) -> None:
    async with store.transaction() as tx:
        with pytest.raises(InvalidData):
            tx.outbox.enqueue(USER, "t", {"v": float("inf")})
        with pytest.raises(InvalidData):
            tx.outbox.enqueue(USER, "t", {}, available_at=NAIVE)
        with pytest.raises(InvalidData):
            tx.users.put_settings(USER, UserSettings(timezone="Mars/Olympus_Mons"))
        with pytest.raises(InvalidData):
            tx.rollups.read(USER, "steps", datetime(2026, 1, 1, tzinfo=UTC), date(2026, 1, 2))  # type: ignore[arg-type]
        with pytest.raises(InvalidData):
            tx.rollups.upsert_many(
                [DailyRollup(USER, "steps", date(2026, 1, 1), "count", 1, math.nan, 0.0, 1.0)]
            )
        with pytest.raises(InvalidData):
            tx.samples.query(USER, start=NAIVE)
        with pytest.raises(InvalidData):
            tx.watermarks.bump(USER, by=0)
        with pytest.raises(InvalidData):
            tx.entities.put(SyncEntity(USER, "goal", "g" * 300, 1, {}))
        with pytest.raises(InvalidData):
            SampleCursor.decode("not-a-cursor")
    async with store.transaction(readonly=True) as tx:
        assert (await tx.outbox.stats()).pending == 0


# --- units of work -----------------------------------------------------------------------


async def test_failing_unit_of_work_leaves_nothing(store: Store) -> None:
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            await tx.run(
                tx.samples.upsert_many(USER, [sample(0), sample(1)]),
                tx.watermarks.bump(USER, by=2),
                tx.outbox.enqueue(USER, "health.samples.changed", {"n": 2}),
            )
            raise RuntimeError("the actor crashed after writing")
    assert await all_samples(store, include_deleted=True) == []
    async with store.transaction(readonly=True) as tx:
        marks, stats = await tx.run(tx.watermarks.get(USER), tx.outbox.stats())
    assert marks.watermark == 0 and stats == OutboxStats(0, 0, 0, 0, None)


async def test_a_failing_statement_rolls_back_the_whole_transaction(store: Store) -> None:
    tx = store.transaction()
    with pytest.raises(StoreError, match="rolled back by an earlier error"):
        async with tx:
            await tx.samples.upsert_many(USER, [sample(0)])
            with pytest.raises(NotFound):
                await tx.commit(tx.watermarks.bump(USER), tx.ingest.complete(USER, "no-such-request", {}))
            assert tx.finished
            with pytest.raises(StoreError):
                await tx.watermarks.get(USER)
    assert await all_samples(store) == []
    async with store.transaction() as tx2:
        assert (await tx2.watermarks.get(USER)).watermark == 0


async def test_unique_violation_is_translated(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.dead_letters.record("test", {}, "boom")
    with pytest.raises(UniqueViolation):
        async with store.transaction() as tx:
            await Op(
                tx,
                execute(
                    "INSERT INTO dead_letters (id, source, payload, error, created_at)"
                    " OVERRIDING SYSTEM VALUE VALUES (1, 's', '{}', 'e', $1)"
                    if store.backend == "postgresql"
                    else "INSERT INTO dead_letters (id, source, payload, error, created_at)"
                    " VALUES (1, 's', '{}', 'e', $1)",
                    tx.dialect.ts(T0),
                ),
            )


async def test_a_unit_of_work_of_one_statement_commits_alone_or_not_at_all(store: Store) -> None:
    # PostgreSQL runs such a unit without BEGIN/COMMIT: the statement is atomic on its own.
    async with store.transaction() as tx:
        (first,) = await tx.commit(tx.dead_letters.record("test", {"n": 1}, "boom"))
    duplicate = ("INSERT INTO dead_letters (id, source, payload, error, created_at)"
                 + (" OVERRIDING SYSTEM VALUE" if store.backend == "postgresql" else "")
                 + " VALUES ($1, 's', '{}', 'e', $2), ($1 + 1000, 's', '{}', 'e', $2)")
    with pytest.raises(UniqueViolation):
        async with store.transaction() as tx:
            await tx.commit(Op(tx, execute(duplicate, first, tx.dialect.ts(T0))))
    async with store.transaction() as tx:  # the failed statement left nothing, and the store goes on
        (second,) = await tx.commit(tx.dead_letters.record("test", {"n": 2}, "boom"))
    async with store.transaction(readonly=True) as tx:
        (listed,) = await tx.commit(tx.dead_letters.list())
    assert [d.id for d in listed] == [first, second]


async def test_an_op_never_submitted_fails_the_commit(store: Store) -> None:
    with pytest.raises(StoreError, match="never awaited"):
        async with store.transaction() as tx:
            await tx.samples.upsert_many(USER, [sample(0)])
            tx.watermarks.bump(USER)  # forgotten await: must not be silently dropped
    assert await all_samples(store) == []


async def test_ops_are_batched_into_few_crossings(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    crossings: list[tuple[int, bool, str | None]] = []
    tx = store.transaction()
    real = tx._cross

    async def counting(ops: list[Op[Any]], *, begin: bool, end: Any) -> list[Any]:
        crossings.append((len(ops), begin, end))
        return await real(ops, begin=begin, end=end)

    monkeypatch.setattr(tx, "_cross", counting)
    async with tx:
        counts, mark = await tx.run(tx.samples.upsert_many(USER, [sample(0)]), tx.watermarks.bump(USER))
        tx.defer(tx.outbox.enqueue(USER, "health.samples.changed", {"watermark": mark}))
        await tx.commit(tx.watermarks.advance(USER, "rollup", [(0, 1)]))
    assert counts.inserted == 1 and mark == 1
    assert crossings == [(2, True, None), (2, False, "commit")]

    crossings.clear()
    tx = store.transaction()
    real = tx._cross
    monkeypatch.setattr(tx, "_cross", counting)
    async with tx:
        tx.defer(tx.samples.upsert_many(USER, [sample(1)]), tx.watermarks.bump(USER))
    assert crossings == [(2, True, "commit")]  # BEGIN, both ops and COMMIT: one crossing
    async with store.transaction(readonly=True) as check:
        assert (await check.watermarks.get(USER)).watermark == 2


async def test_transact_commits_and_returns(store: Store) -> None:
    async def work(tx: Any) -> int:
        await tx.samples.upsert_many(USER, [sample(0)])
        return int(await tx.watermarks.bump(USER, by=5))

    assert await store.transact(work) == 5
    assert len(await all_samples(store)) == 1


async def test_readonly_transactions_cannot_write(store: Store) -> None:
    with pytest.raises(StoreError):
        async with store.transaction(readonly=True) as tx:
            await tx.watermarks.bump(USER)
    await store.ping()


# --- users -------------------------------------------------------------------------------


async def test_user_settings_default_and_round_trip(store: Store) -> None:
    async with store.transaction() as tx:
        assert await tx.users.get_settings(USER) == UserSettings(True, (), "UTC", ())
        assert await tx.users.ensure(USER) is True
        assert await tx.users.ensure(USER) is False
        stored = await tx.users.put_settings(
            USER, UserSettings(False, ("steps", "spo2", "steps"), "Europe/Berlin")
        )
    assert stored == UserSettings(False, ("steps", "spo2"), "Europe/Berlin")
    async with store.transaction() as tx:
        ranked = await tx.users.put_settings(USER, replace(stored, source_priority=("watch-1", "phone")))
    assert ranked.source_priority == ("watch-1", "phone") and ranked.timezone == "Europe/Berlin"
    async with store.transaction(readonly=True) as tx:
        assert await tx.users.get_settings(USER) == ranked


@pytest.mark.parametrize(
    ("priority", "why"),
    [
        (tuple(f"s{i}" for i in range(65)), "more than 64"),
        (("watch", "phone", "watch"), "more than once"),
        (("watch", ""), "empty"),
        (("x" * 257,), "longer than"),
        ("watch", "sequence"),
    ],
)
async def test_source_priority_is_checked(store: Store, priority: Any, why: str) -> None:
    async with store.transaction() as tx:
        with pytest.raises(InvalidData, match=why):
            tx.users.put_settings(USER, UserSettings(source_priority=priority))
        assert await tx.users.put_settings(USER, UserSettings(source_priority=tuple(f"s{i}" for i in range(64))))


# --- ingest requests ---------------------------------------------------------------------


async def test_ingest_request_lifecycle(store: Store) -> None:
    async with store.transaction() as tx:
        first = await tx.ingest.begin(USER, "req-1", "hash-a", lane="hot")
    assert first.acquired and first.request.status == "processing" and first.request.lane == "hot"
    async with store.transaction() as tx:
        repeat = await tx.ingest.begin(USER, "req-1", "hash-a")
    assert not repeat.acquired and repeat.request.status == "processing"  # → 409 in progress
    async with store.transaction() as tx:
        await tx.samples.upsert_many(USER, [sample(0)])
        await tx.ingest.complete(USER, "req-1", {"inserted": 1, "rejected": []})
    async with store.transaction() as tx:
        replay, other = await tx.run(
            tx.ingest.begin(USER, "req-1", "hash-a"), tx.ingest.begin(USER, "req-1", "hash-b")
        )
    assert not replay.acquired and replay.request.status == "completed"
    assert replay.request.result == {"inserted": 1, "rejected": []}
    assert not other.acquired and other.request.payload_hash == "hash-a"  # → 422 hash mismatch
    with pytest.raises(ConflictError):
        async with store.transaction() as tx:
            await tx.ingest.complete(USER, "req-1", {})


async def test_failed_ingest_request_can_be_taken_again_with_the_same_hash(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.ingest.begin(USER, "req-1", "hash-a")
        await tx.ingest.fail(USER, "req-1", "database unavailable")
    async with store.transaction() as tx:
        other = await tx.ingest.begin(USER, "req-1", "hash-b")
        retry = await tx.ingest.begin(USER, "req-1", "hash-a")
    assert not other.acquired and other.request.status == "failed"
    assert retry.acquired and retry.request.error is None


async def test_reap_stale_processing_requests(clocked: Store, clock: ManualClock) -> None:
    async with clocked.transaction() as tx:
        await tx.ingest.begin(USER, "old", "h")
    clock.advance(600)
    async with clocked.transaction() as tx:
        await tx.ingest.begin(USER, "new", "h")
        assert await tx.ingest.reap_stale(300) == 1
        old, new = await tx.run(tx.ingest.get(USER, "old"), tx.ingest.get(USER, "new"))
    assert old is not None and old.status == "failed" and old.error
    assert new is not None and new.status == "processing"


# --- outbox ------------------------------------------------------------------------------


async def test_enqueue_deduplicates_on_key(store: Store) -> None:
    async with store.transaction() as tx:
        a = await tx.outbox.enqueue(USER, "health.samples.changed", {"req": 1}, dedupe_key="ingest:req-1")
        b = await tx.outbox.enqueue(USER, "health.samples.changed", {"req": 2}, dedupe_key="ingest:req-1")
        c = await tx.outbox.enqueue(USER, "health.samples.changed", {"req": 3})
        event_a, event_c = await tx.run(tx.outbox.get(a.id), tx.outbox.get(c.id))
    assert a.created and not b.created and b.id == a.id and c.created and c.id != a.id
    assert event_a is not None and event_c is not None
    assert event_a.event_hash != event_c.event_hash and len(event_a.event_hash) == 64
    assert event_a.payload == {"req": 1} and event_a.status == "pending"


async def test_claim_and_complete(clocked: Store, clock: ManualClock) -> None:
    async with clocked.transaction() as tx:
        ids = [(await tx.outbox.enqueue(USER, "e", {"i": i})).id for i in range(3)]
        later = await tx.outbox.enqueue(USER, "e", {"later": True}, available_at=T0 + timedelta(hours=1))
    async with clocked.transaction() as tx:
        claimed = await tx.outbox.claim("worker-a", limit=10)
        again = await tx.outbox.claim("worker-b", limit=10)
    assert [e.id for e in claimed] == ids and again == []
    assert all(e.status == "processing" and e.attempts == 1 and e.lease_owner == "worker-a" for e in claimed)
    assert claimed[0].lease_expires_at == T0 + timedelta(seconds=30)
    async with clocked.transaction() as tx:
        assert await tx.outbox.complete(ids[0], "worker-b") is False
        assert await tx.outbox.complete(ids[0], "worker-a") is True
        assert await tx.outbox.complete(ids[0], "worker-a") is False
        assert await tx.outbox.release("worker-a") == 2
        stats = await tx.outbox.stats()
    assert stats == OutboxStats(pending=3, processing=0, completed=1, dead=0, oldest_pending_age_seconds=0.0)
    clock.advance(3600)
    async with clocked.transaction() as tx:
        claimed = await tx.outbox.claim("worker-c")
    assert [e.id for e in claimed] == [ids[1], ids[2], later.id]
    assert [e.attempts for e in claimed] == [1, 1, 1]  # a release does not count as an attempt


async def test_fail_retries_with_backoff_then_dead_letters_and_replays(
    clocked: Store, clock: ManualClock
) -> None:
    async with clocked.transaction() as tx:
        event = await tx.outbox.enqueue(USER, "e", {})
    delays = []
    for attempt in (1, 2, 3):
        async with clocked.transaction() as tx:
            (claimed,) = await tx.outbox.claim("w")
            assert claimed.attempts == attempt
            status = await tx.outbox.fail(event.id, "w", f"boom {attempt}")
            current = await tx.outbox.get(event.id)
        assert current is not None
        if attempt < 3:
            assert status == "pending"
            delays.append((current.next_attempt_at - clock.now).total_seconds())
            async with clocked.transaction() as tx:
                assert await tx.outbox.claim("w") == []  # not due yet
            clock.advance(delays[-1])
    assert delays == [10.0, 20.0]  # base 10 s, doubling (jitter 0)
    assert status == "dead" and current.last_error == "boom 3"
    async with clocked.transaction() as tx:
        dead = await tx.outbox.list_dead()
        assert [e.id for e in dead] == [event.id]
        assert await tx.outbox.claim("w") == []
        assert await tx.outbox.replay(event.id) is True
        assert await tx.outbox.replay(event.id) is False
        (revived,) = await tx.outbox.claim("w")
    assert revived.attempts == 1


async def test_non_retryable_failure_goes_straight_to_dead(clocked: Store) -> None:
    async with clocked.transaction() as tx:
        event = await tx.outbox.enqueue(USER, "e", {})
        await tx.outbox.claim("w")
        assert await tx.outbox.fail(event.id, "w", "poison", retryable=False) == "dead"
        assert await tx.outbox.fail(event.id, "w", "again") is None


async def test_expired_lease_is_reclaimed(clocked: Store, clock: ManualClock) -> None:
    async with clocked.transaction() as tx:
        event = await tx.outbox.enqueue(USER, "e", {})
        await tx.outbox.claim("crashed-worker")
    clock.advance(29)
    async with clocked.transaction() as tx:
        assert await tx.outbox.claim("w2") == []
    clock.advance(2)
    async with clocked.transaction() as tx:
        (reclaimed,) = await tx.outbox.claim("w2")
        assert reclaimed.id == event.id and reclaimed.attempts == 2 and reclaimed.lease_owner == "w2"
        assert await tx.outbox.complete(event.id, "crashed-worker") is False
        assert await tx.outbox.complete(event.id, "w2") is True


async def test_expired_lease_on_the_last_attempt_dead_letters(clocked: Store, clock: ManualClock) -> None:
    async with clocked.transaction() as tx:
        event = await tx.outbox.enqueue(USER, "e", {})
    for _ in range(3):
        async with clocked.transaction() as tx:
            assert len(await tx.outbox.claim("crashy")) == 1
        clock.advance(31)
    async with clocked.transaction() as tx:
        assert await tx.outbox.claim("w") == []
        dead = await tx.outbox.get(event.id)
    assert dead is not None and dead.status == "dead" and dead.attempts == 3


# --- projections and watermarks ----------------------------------------------------------


async def test_daily_rollups(store: Store) -> None:
    def day(d: int, total: float) -> DailyRollup:
        return DailyRollup(USER, "steps", date(2026, 11, d), "count", 2, total, 1.0, total - 1.0)

    async with store.transaction() as tx:
        assert await tx.rollups.upsert_many([day(1, 10.0), day(2, 20.0), day(3, 30.0)]) == 3
        assert await tx.rollups.upsert_many([day(2, 22.0)]) == 1
        days = await tx.rollups.read(USER, "steps", date(2026, 11, 2), date(2026, 11, 3))
    assert [(r.local_date.day, r.sum) for r in days] == [(2, 22.0), (3, 30.0)] and days[0].avg == 11.0
    async with store.transaction() as tx:
        await tx.rollups.replace_range(USER, "steps", date(2026, 11, 1), date(2026, 11, 2), [day(1, 5.0)])
        days = await tx.rollups.read(USER, "steps", date(2026, 11, 1), date(2026, 11, 30))
        with pytest.raises(InvalidData):
            tx.rollups.replace_range(USER, "steps", date(2026, 11, 1), date(2026, 11, 2), [day(9, 1.0)])
    assert [(r.local_date.day, r.sum) for r in days] == [(1, 5.0), (3, 30.0)]


async def test_sleep_nights(store: Store) -> None:
    def night(d: int, asleep: float) -> SleepNight:
        start = datetime(2026, 11, d, 22, 30, tzinfo=UTC)
        return SleepNight(
            USER, date(2026, 11, d), start, start + timedelta(hours=8), asleep, 20.0, {"deep": 90, "rem": 100}
        )

    async with store.transaction() as tx:
        await tx.sleep.upsert_many([night(1, 400.0), night(2, 420.0)])
        await tx.sleep.upsert_many([night(2, 430.0)])
        await tx.sleep.replace_range(USER, date(2026, 11, 1), date(2026, 11, 1), [])
        nights = await tx.sleep.read(USER, date(2026, 11, 1), date(2026, 11, 5))
    assert [(n.night_date.day, n.asleep_minutes) for n in nights] == [(2, 430.0)]
    assert nights[0].stages == {"deep": 90, "rem": 100} and nights[0].start_at == datetime(
        2026, 11, 2, 22, 30, tzinfo=UTC
    )


async def test_watermarks(store: Store) -> None:
    async with store.transaction() as tx:
        assert (await tx.watermarks.get(USER)).watermark == 0
        assert await tx.watermarks.bump(USER, by=3) == 3
        assert await tx.watermarks.bump(USER) == 4
        assert await tx.watermarks.advance(USER, "rollup", [(0, 4)]) == 4
        assert await tx.watermarks.advance(USER, "rollup", [(0, 2)]) == 4  # never goes back
        await tx.watermarks.advance(USER, "sleep", [(0, 3)])
        marks = await tx.watermarks.get(USER)
    assert marks.watermark == 4 and dict(marks.projected) == {"rollup": 4, "sleep": 3}


# --- sync --------------------------------------------------------------------------------


async def test_entities_with_optimistic_versions(store: Store) -> None:
    entry = SyncEntity(USER, "journal_entry", "e1", 1, {"text": "hi", "tags": ["a"]})
    async with store.transaction() as tx:
        created = await tx.entities.put(entry, expected_version=0)
    with pytest.raises(ConflictError):
        async with store.transaction() as tx:
            await tx.entities.put(entry, expected_version=0)
    assert created.updated_at is not None and created.data == entry.data
    async with store.transaction() as tx:
        updated = await tx.entities.put(replace(entry, version=2, data={"text": "hello"}), expected_version=1)
        assert updated.version == 2
    with pytest.raises(ConflictError):
        async with store.transaction() as tx:
            await tx.entities.put(replace(entry, version=3), expected_version=1)
    with pytest.raises(NotFound):
        async with store.transaction() as tx:
            await tx.entities.put(replace(entry, entity_id="missing"), expected_version=4)
    async with store.transaction() as tx:
        await tx.entities.put(replace(entry, version=3, deleted=True, data=None))
        assert (
            await tx.entities.put_many([SyncEntity(USER, "goal", f"g{i}", 1, {"i": i}) for i in range(3)])
            == 3
        )
        found = await tx.entities.get_many(USER, [("journal_entry", "e1"), ("goal", "g2"), ("goal", "nope")])
        listed = await tx.entities.list(USER, after=("goal", "g0"), limit=2)
        one = await tx.entities.get(USER, "goal", "g1")
    assert set(found) == {("journal_entry", "e1"), ("goal", "g2")}
    assert found[("journal_entry", "e1")].deleted and found[("journal_entry", "e1")].version == 3
    assert [(e.entity_type, e.entity_id) for e in listed] == [("goal", "g1"), ("goal", "g2")]
    assert one is not None and one.data == {"i": 1}


async def test_sync_operations_keep_their_first_result(store: Store) -> None:
    async with store.transaction() as tx:
        assert await tx.sync_ops.record_many(USER, "phone", {"op-1": {"status": "applied"}}) == 1
        await tx.sync_ops.record_many(
            USER, "phone", {"op-1": {"status": "other"}, "op-2": {"status": "conflict"}}
        )
        stored = await tx.sync_ops.get_many(USER, "phone", ["op-1", "op-2", "op-3"])
        elsewhere = await tx.sync_ops.get_many(USER, "tablet", ["op-1"])
    assert stored == {"op-1": {"status": "applied"}, "op-2": {"status": "conflict"}}
    assert elsewhere == {}


async def test_change_log_sequence_and_device_cursors(store: Store) -> None:
    def change(i: int) -> ChangeIn:
        return ChangeIn("journal_entry", f"e{i}", "create", 1, {"i": i}, device_id="phone")

    async with store.transaction() as tx:
        assert await tx.changes.append_many(USER, [change(0), change(1)]) == [1, 2]
    async with store.transaction() as tx:
        assert await tx.changes.append_many(USER, [change(2)]) == [3]
        assert await tx.changes.append_many("other-user", [change(9)]) == [1]
        page = await tx.changes.read(USER, after_seq=1, limit=10)
        assert await tx.changes.latest_seq(USER) == 3
        assert await tx.changes.latest_seq("nobody") == 0
    assert [c.seq for c in page] == [2, 3] and isinstance(page[0], Change)
    assert page[0].entity_id == "e1" and page[0].data == {"i": 1} and page[0].device_id == "phone"
    async with store.transaction() as tx:
        assert await tx.devices.get(USER, "tablet") is None
        assert (await tx.devices.acknowledge(USER, "tablet", 2)).acked_seq == 2
        assert (await tx.devices.acknowledge(USER, "tablet", 1)).acked_seq == 2  # never backwards
        state = await tx.devices.get(USER, "tablet")
    assert state is not None and state.acked_seq == 2


async def test_conflicts(store: Store) -> None:
    async with store.transaction() as tx:
        c = await tx.conflicts.open(
            USER,
            entity_type="goal",
            entity_id="g1",
            server_version=3,
            base_version=2,
            server_data={"target": 10},
            client_data={"target": 12},
            device_id="phone",
        )
        listed = await tx.conflicts.list(USER)
        assert await tx.conflicts.list("intruder") == []
        assert await tx.conflicts.get("intruder", c.id) is None
    assert c.status == "open" and [x.id for x in listed] == [c.id]
    async with store.transaction() as tx:
        resolved = await tx.conflicts.resolve(USER, c.id, resolution="custom", data={"target": 11})
    assert resolved.status == "resolved" and resolved.resolved_data == {"target": 11} and resolved.resolved_at
    with pytest.raises(ConflictError):
        async with store.transaction() as tx:
            await tx.conflicts.resolve(USER, c.id, resolution="server")
    with pytest.raises(NotFound):
        async with store.transaction() as tx:
            await tx.conflicts.resolve("intruder", c.id, resolution="server")
    async with store.transaction() as tx:
        assert await tx.conflicts.list(USER) == []
        assert [x.id for x in await tx.conflicts.list(USER, status=None)] == [c.id]


async def test_dead_letters(store: Store) -> None:
    async with store.transaction() as tx:
        first = await tx.dead_letters.record("actor:root/ingest", {"msg": 1}, "ValueError: x", user_id=USER)
        second = await tx.dead_letters.record("projection", {"event": 7}, "boom", key="7:rollup")
        everything = await tx.dead_letters.list()
        projections = await tx.dead_letters.list(source="projection")
        after_first = await tx.dead_letters.list(after_id=first)
        assert await tx.dead_letters.delete(first) is True
        assert await tx.dead_letters.delete(first) is False
    assert [d.id for d in everything] == [first, second]
    assert [d.key for d in projections] == ["7:rollup"] and [d.id for d in after_first] == [second]
    assert everything[0].payload == {"msg": 1} and everything[0].user_id == USER


# --- migrations --------------------------------------------------------------------------


async def test_migrations_are_versioned_and_idempotent(store_url: str, store_config: StoreConfig) -> None:
    from storage import migrate

    async with open_store(store_url, config=store_config) as first:
        known = POSTGRES_MIGRATIONS if first.backend == "postgresql" else SQLITE_MIGRATIONS
        assert first.applied_migrations == [m.version for m in known]
    assert await migrate(store_url, config=store_config) == []
    async with open_store(store_url, config=replace(store_config, migrate_on_open=False)) as again:
        assert again.applied_migrations == []
        async with again.transaction() as tx:
            await Op(
                tx,
                execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (999, 'from the future')"
                    if again.backend == "postgresql"
                    else "INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'x', 0)"
                ),
            )
    with pytest.raises(StoreError, match="newer than this code"):
        async with open_store(store_url, config=store_config):
            pass
