"""The read side's storage contract (outbox, checkpoints, dead letters, watermark ranges), run against
SQLite and the real PostgreSQL (see conftest). Wall-clock time comes from a ManualClock the tests move."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio

from storage import (
    Checkpoint,
    CheckpointIn,
    CheckpointKey,
    DeadLetterItem,
    HandlerLag,
    InvalidData,
    OutboxPolicy,
    OutboxStats,
    ProjectionState,
    Store,
    StoreConfig,
    open_store,
)
from storage._migrations.sqlite import MIGRATIONS as SQLITE_MIGRATIONS
from storage._sql import fetchrow, fetchval
from storage._tx import Op
from storage.testing import ManualClock

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
USER = "user-1"
ROLLUPS, NIGHTS = "daily_rollups", "sleep_nights"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
async def clocked(store_url: str, store_config: StoreConfig, clock: ManualClock) -> AsyncIterator[Store]:
    """Lease 30 s, 3 attempts, backoff 10 s doubling, no jitter: every schedule is exact."""
    config = replace(
        store_config,
        clock=clock,
        checkpoint_lease_seconds=30,
        outbox=OutboxPolicy(lease_seconds=30, max_attempts=3, base_delay=10, max_delay=100, jitter=0.0),
    )
    async with open_store(store_url, config=config) as opened:
        yield opened


def cp(event_id: int, handler: str = ROLLUPS, *, user: str = USER, depends_on: str | None = None,
       wm: tuple[int, int] | None = None, correlation_id: str | None = None) -> CheckpointIn:
    return CheckpointIn(event_id=event_id, handler=handler, user_id=user, event_type="health.samples.changed",
                        depends_on=depends_on, wm_from=wm[0] if wm else None, wm_to=wm[1] if wm else None,
                        correlation_id=correlation_id)


def keys(checkpoints: list[Checkpoint]) -> list[CheckpointKey]:
    return [c.key for c in checkpoints]


async def _get(store: Store, event_id: int, handler: str) -> Checkpoint:
    """A checkpoint as stored, read beside the API (every API call that returns one also changes it)."""
    async with store.transaction(readonly=True) as tx:
        sql = "SELECT * FROM projection_checkpoints WHERE event_id = $1 AND handler = $2"
        row: Any = await Op(tx, fetchrow(sql, event_id, handler))
    assert row is not None, f"no checkpoint ({event_id}, {handler})"
    return tx.checkpoints._checkpoint(row)


# --- outbox ------------------------------------------------------------------------------


async def test_enqueue_dedupes_by_content_while_unfinished_and_by_key_always(clocked: Store) -> None:
    async with clocked.transaction() as tx:
        a = await tx.outbox.enqueue(USER, "health.samples.changed", {"n": 1}, correlation_id="req-1")
        same = await tx.outbox.enqueue(USER, "health.samples.changed", {"n": 1}, correlation_id="req-2")
        other_user = await tx.outbox.enqueue("user-2", "health.samples.changed", {"n": 1})
        keyed = await tx.outbox.enqueue(USER, "e", {"n": 2}, dedupe_key="k")
        same_key = await tx.outbox.enqueue(USER, "e", {"n": 3}, dedupe_key="k")
        (event,) = await tx.outbox.get_many([a.id])
    assert a.created and not same.created and same.id == a.id and other_user.created
    assert keyed.created and not same_key.created and same_key.id == keyed.id
    assert event.correlation_id == "req-1" and event.status == "pending"
    async with clocked.transaction() as tx:
        claimed = await tx.outbox.claim("d", limit=10)
        # Still unfinished while processing: content dedupe holds.
        assert not (await tx.outbox.enqueue(USER, "health.samples.changed", {"n": 1})).created
        assert await tx.outbox.complete_many("d", [e.id for e in claimed]) == 3
        again = await tx.outbox.enqueue(USER, "health.samples.changed", {"n": 1})
        key_again = await tx.outbox.enqueue(USER, "e", {"n": 4}, dedupe_key="k")
    assert again.created and again.id != a.id  # the first one completed: the same content is news again
    assert not key_again.created and key_again.id == keyed.id  # a dedupe key holds forever
    assert [e.correlation_id for e in claimed] == ["req-1", None, None]


async def test_complete_many_only_touches_what_the_owner_holds(clocked: Store) -> None:
    async with clocked.transaction() as tx:
        ids = [(await tx.outbox.enqueue(USER, "e", {"i": i})).id for i in range(4)]
        mine = await tx.outbox.claim("a", limit=2)
        theirs = await tx.outbox.claim("b", limit=10)
        assert await tx.outbox.complete_many("a", []) == 0
        assert await tx.outbox.complete_many("a", ids) == 2  # b's two are not a's to complete
        assert await tx.outbox.complete_many("a", ids) == 0  # already completed
        assert await tx.outbox.complete_many("b", [theirs[0].id, 999]) == 1
        events = await tx.outbox.get_many([ids[3], 999, ids[0], ids[2]])
        with pytest.raises(InvalidData):
            tx.outbox.complete_many("a", [0])
    assert [e.id for e in mine] == ids[:2]
    assert [(e.id, e.status) for e in events] == [(ids[0], "completed"), (ids[2], "completed"),
                                                  (ids[3], "processing")]


async def test_stats_count_each_status_and_age_the_oldest_pending(clocked: Store, clock: ManualClock) -> None:
    async with clocked.transaction() as tx:
        assert await tx.outbox.stats() == OutboxStats(0, 0, 0, 0, None)
        first = await tx.outbox.enqueue(USER, "e", {"i": 0})
    clock.advance(5)
    async with clocked.transaction() as tx:
        await tx.outbox.enqueue(USER, "e", {"i": 1})
        await tx.outbox.enqueue(USER, "e", {"i": 2})
        await tx.outbox.enqueue(USER, "e", {"i": 3})
    clock.advance(7)
    async with clocked.transaction() as tx:
        (claimed,) = await tx.outbox.claim("w", limit=1)
        assert claimed.id == first.id
        (other,) = await tx.outbox.claim("w", limit=1)
        await tx.outbox.complete(other.id, "w")
        (poison,) = await tx.outbox.claim("w", limit=1)
        await tx.outbox.fail(poison.id, "w", "poison", retryable=False)
        stats = await tx.outbox.stats()
    assert stats == OutboxStats(pending=1, processing=1, completed=1, dead=1, oldest_pending_age_seconds=7.0)


async def test_purge_completed_keeps_dead_and_recent_and_is_bounded(clocked: Store, clock: ManualClock) -> None:
    async with clocked.transaction() as tx:
        ids = [(await tx.outbox.enqueue(USER, "e", {"i": i})).id for i in range(4)]
        claimed = await tx.outbox.claim("w", limit=4)
        await tx.outbox.complete_many("w", ids[:3])
        await tx.outbox.fail(ids[3], "w", "poison", retryable=False)
        created = await tx.checkpoints.create_many([cp(i) for i in ids[:3]], owner="w")
        await tx.checkpoints.complete_many("w", keys(created[:2]))
    assert len(claimed) == 4
    clock.advance(100)
    async with clocked.transaction() as tx:
        await tx.checkpoints.complete_many("w", keys(created[2:]))  # completed just now: recent
        assert await tx.outbox.purge_completed(50, limit=2) == 2
        assert await tx.outbox.purge_completed(50, limit=2) == 1
        assert await tx.outbox.purge_completed(50) == 0
        stats = await tx.outbox.stats()
        with pytest.raises(InvalidData):
            tx.outbox.purge_completed(0)
    assert (stats.completed, stats.dead) == (0, 1)
    async with clocked.transaction() as tx:
        lag = await tx.checkpoints.lag()
        assert await tx.checkpoints.complete_many("w", keys(created)) == 0
    # The two old completed checkpoints went; the recent one is still there.
    assert lag == []
    remaining = await _get(clocked, ids[2], ROLLUPS)
    assert remaining.status == "completed"
    for gone in ids[:2]:
        with pytest.raises(AssertionError, match="no checkpoint"):
            await _get(clocked, gone, ROLLUPS)


# --- checkpoints: creating and claiming --------------------------------------------------


async def test_create_many_pending_or_leased_and_never_resets_progress(clocked: Store) -> None:
    async with clocked.transaction() as tx:
        leased = await tx.checkpoints.create_many([cp(1, wm=(0, 3), correlation_id="req-1"), cp(2)], owner="d",
                                                  lease_seconds=10)
        pending = await tx.checkpoints.create_many([cp(1, NIGHTS, depends_on=ROLLUPS)])
        await tx.checkpoints.complete_many("d", [CheckpointKey(1, ROLLUPS)])
        # Redelivered: nothing is created, nothing is reset.
        again = await tx.checkpoints.create_many([cp(1), cp(2), cp(1, NIGHTS), cp(3)])
        with pytest.raises(InvalidData):
            tx.checkpoints.create_many([cp(4, wm=(5, 5))])
        with pytest.raises(InvalidData):
            tx.checkpoints.create_many([cp(0)])
        with pytest.raises(InvalidData):
            tx.checkpoints.create_many([cp(4)], lease_seconds=5)
    first, second = leased
    assert (first.status, first.attempts, first.lease_owner) == ("processing", 1, "d")
    assert first.lease_expires_at == T0 + timedelta(seconds=10) and first.next_attempt_at == T0
    assert (first.wm_from, first.wm_to, first.correlation_id, first.user_id) == (0, 3, "req-1", USER)
    assert second.key == CheckpointKey(2, ROLLUPS)
    (night,) = pending
    assert (night.status, night.attempts, night.lease_owner, night.depends_on) == ("pending", 0, None, ROLLUPS)
    assert [c.key for c in again] == [CheckpointKey(3, ROLLUPS)]
    assert (await _get(clocked, 1, ROLLUPS)).status == "completed"


async def test_create_many_takes_a_large_batch_in_one_go(clocked: Store) -> None:
    rows = [cp(i, user=f"user-{i % 7}", wm=(i, i + 1)) for i in range(1, 1201)]
    async with clocked.transaction() as tx:
        created = await tx.checkpoints.create_many(rows, owner="d")
        again = await tx.checkpoints.create_many(rows)
    assert len(created) == 1200 and again == []
    assert [c.event_id for c in created] == list(range(1, 1201))  # ordered (next_attempt_at, event_id)


async def test_claim_orders_due_work_and_gates_on_dependencies(clocked: Store, clock: ManualClock) -> None:
    async with clocked.transaction() as tx:
        await tx.checkpoints.create_many([cp(3), cp(1), cp(2), cp(1, NIGHTS, depends_on=ROLLUPS)])
        await tx.checkpoints.create_many([cp(4, NIGHTS)])
        # A dependent whose dependency does not exist yet waits too.
        await tx.checkpoints.create_many([cp(5, NIGHTS, depends_on=ROLLUPS)])
    async with clocked.transaction() as tx:
        nights_first = await tx.checkpoints.claim(NIGHTS, "w", limit=10)
        rollups = await tx.checkpoints.claim(ROLLUPS, "w", limit=2, lease_seconds=60)
        rest = await tx.checkpoints.claim(ROLLUPS, "w2", limit=10)
    assert [c.key for c in nights_first] == [CheckpointKey(4, NIGHTS)]  # event 1's waits for its rollup
    assert [c.event_id for c in rollups] == [1, 2] and [c.event_id for c in rest] == [3]
    assert all(c.status == "processing" and c.attempts == 1 for c in rollups + rest)
    assert rollups[0].lease_expires_at == T0 + timedelta(seconds=60)
    assert rest[0].lease_expires_at == T0 + timedelta(seconds=30)  # the store's default lease
    async with clocked.transaction() as tx:
        assert await tx.checkpoints.complete_many("w", [CheckpointKey(1, ROLLUPS)]) == 1
        unlocked = await tx.checkpoints.claim(NIGHTS, "w", limit=10)
    assert [c.key for c in unlocked] == [CheckpointKey(1, NIGHTS)]


async def test_renew_and_complete_only_what_the_owner_holds(clocked: Store, clock: ManualClock) -> None:
    async with clocked.transaction() as tx:
        mine = await tx.checkpoints.create_many([cp(1), cp(2)], owner="a")
        theirs = await tx.checkpoints.create_many([cp(3)], owner="b")
    clock.advance(20)
    async with clocked.transaction() as tx:
        assert await tx.checkpoints.renew("a", keys(mine + theirs), lease_seconds=30) == 2
        assert await tx.checkpoints.renew("a", []) == 0
    clock.advance(20)  # 40 s in: b's lease (30 s) expired, a's renewed one (until 50 s) did not
    async with clocked.transaction() as tx:
        taken = await tx.checkpoints.claim(ROLLUPS, "c", limit=10)
        assert await tx.checkpoints.complete_many("b", keys(theirs)) == 0  # lost its lease
        assert await tx.checkpoints.complete_many("a", keys(mine + theirs)) == 2
        assert await tx.checkpoints.complete_many("a", keys(mine)) == 0
        assert await tx.checkpoints.renew("a", keys(mine)) == 0  # completed: nothing to renew
    assert [(c.event_id, c.attempts, c.lease_owner) for c in taken] == [(3, 2, "c")]


async def test_release_hands_work_back_unattempted(clocked: Store, clock: ManualClock) -> None:
    async with clocked.transaction() as tx:
        leased = await tx.checkpoints.create_many([cp(1), cp(2)], owner="a")
        assert await tx.checkpoints.release("b", keys(leased)) == 0
        assert await tx.checkpoints.release("a", [CheckpointKey(1, ROLLUPS)]) == 1
        assert await tx.checkpoints.release("a", [CheckpointKey(2, ROLLUPS)],
                                            due_at=T0 + timedelta(seconds=15)) == 1
        with pytest.raises(InvalidData):
            tx.checkpoints.release("a", keys(leased), due_at=datetime(2026, 1, 1))  # naive
        now_due = await tx.checkpoints.claim(ROLLUPS, "c")
    assert [(c.event_id, c.attempts) for c in now_due] == [(1, 1)]  # the released attempt was not counted
    clock.advance(15)
    async with clocked.transaction() as tx:
        later = await tx.checkpoints.claim(ROLLUPS, "c")
    assert [(c.event_id, c.attempts) for c in later] == [(2, 1)]


# --- checkpoints: failing, leases, dead letters ------------------------------------------


async def test_fail_waits_out_its_backoff_then_dies_after_the_last_attempt(clocked: Store,
                                                                           clock: ManualClock) -> None:
    async with clocked.transaction() as tx:
        await tx.checkpoints.create_many([cp(1)], owner="w")
        assert await tx.checkpoints.fail(CheckpointKey(1, ROLLUPS), "other", "not mine") is None
        assert await tx.checkpoints.fail(CheckpointKey(1, ROLLUPS), "w", "boom 1") == "failed"
        assert await tx.checkpoints.fail(CheckpointKey(1, ROLLUPS), "w", "twice") is None  # no longer held
        state = await tx.checkpoints.state(USER, ROLLUPS)
    assert state == ProjectionState(has_dead=False, retry_waiting=True, unfinished=1)
    failed = await _get(clocked, 1, ROLLUPS)
    assert (failed.status, failed.last_error, failed.lease_owner) == ("failed", "boom 1", None)
    assert failed.next_attempt_at == T0 + timedelta(seconds=10)
    clock.advance(9)
    async with clocked.transaction() as tx:
        assert await tx.checkpoints.claim(ROLLUPS, "w") == []  # backoff not over
    clock.advance(1)
    async with clocked.transaction() as tx:
        (second,) = await tx.checkpoints.claim(ROLLUPS, "w")
        assert await tx.checkpoints.fail(second.key, "w", "boom 2") == "failed"
    assert second.attempts == 2
    assert (await _get(clocked, 1, ROLLUPS)).next_attempt_at == clock.now + timedelta(seconds=20)
    clock.advance(20)
    async with clocked.transaction() as tx:
        (third,) = await tx.checkpoints.claim(ROLLUPS, "w")
        assert await tx.checkpoints.fail(third.key, "w", "boom 3") == "dead"
        assert await tx.checkpoints.claim(ROLLUPS, "w") == []
        state = await tx.checkpoints.state(USER, ROLLUPS)
    assert state == ProjectionState(has_dead=True, retry_waiting=False, unfinished=1)


async def test_a_non_retryable_failure_is_dead_at_once(clocked: Store) -> None:
    async with clocked.transaction() as tx:
        (leased,) = await tx.checkpoints.create_many([cp(1)], owner="w")
        assert await tx.checkpoints.fail(leased.key, "w", "bad data", retryable=False) == "dead"
        with pytest.raises(InvalidData):
            tx.checkpoints.fail((0, ROLLUPS), "w", "x")  # type: ignore[arg-type]
    assert (await _get(clocked, 1, ROLLUPS)).attempts == 1


async def test_an_expired_lease_is_claimed_again_then_dead_on_the_last_attempt(clocked: Store,
                                                                              clock: ManualClock) -> None:
    async with clocked.transaction() as tx:
        await tx.checkpoints.create_many([cp(1)], owner="crashed")
    clock.advance(29)
    async with clocked.transaction() as tx:
        assert await tx.checkpoints.claim(ROLLUPS, "w") == []  # the lease still holds
    clock.advance(1)
    for attempt in (2, 3):
        async with clocked.transaction() as tx:
            (again,) = await tx.checkpoints.claim(ROLLUPS, f"w{attempt}")
        assert (again.attempts, again.lease_owner) == (attempt, f"w{attempt}")
        clock.advance(30)
    async with clocked.transaction() as tx:
        assert await tx.checkpoints.claim(ROLLUPS, "w") == []
        assert await tx.checkpoints.complete_many("w3", [CheckpointKey(1, ROLLUPS)]) == 0
        (item,) = await tx.checkpoints.list_dead()
    dead = await _get(clocked, 1, ROLLUPS)
    assert (dead.status, dead.attempts, dead.last_error) == ("dead", 3, "lease expired on the last attempt")
    assert (item.event_id, item.handler, item.attempts) == (1, ROLLUPS, 3)


async def _dead_letters(store: Store) -> tuple[int, int]:
    """Event ``a`` dead in two handlers; event ``b`` dead in the outbox itself. Returns their ids."""
    async with store.transaction() as tx:
        a = await tx.outbox.enqueue(USER, "health.samples.changed", {"n": 1}, correlation_id="req-a")
        b = await tx.outbox.enqueue("user-2", "user.settings.changed", {"n": 2})
        events = await tx.outbox.claim("d", limit=10)
        await tx.outbox.complete(a.id, "d")
        await tx.outbox.fail(b.id, "d", "cannot dispatch", retryable=False)
        created = await tx.checkpoints.create_many(
            [cp(a.id, correlation_id="req-a", wm=(0, 5)), cp(a.id, NIGHTS, correlation_id="req-a", wm=(0, 5))],
            owner="w")
        for c in created:
            await tx.checkpoints.fail(c.key, "w", f"{c.handler} broke", retryable=False)
    assert len(events) == 2
    return a.id, b.id


async def test_list_dead_pages_checkpoints_and_outbox_events_together(clocked: Store) -> None:
    a, b = await _dead_letters(clocked)
    async with clocked.transaction(readonly=True) as tx:
        everything = await tx.checkpoints.list_dead()
        first = await tx.checkpoints.list_dead(limit=2)
        rest = await tx.checkpoints.list_dead(after=(first[-1].event_id, first[-1].handler or ""), limit=2)
    assert [(i.event_id, i.handler) for i in everything] == [(a, ROLLUPS), (a, NIGHTS), (b, None)]
    assert first + rest == everything
    rollup, _, event = everything
    assert rollup == DeadLetterItem(a, "health.samples.changed", USER, ROLLUPS, 1, "daily_rollups broke", T0,
                                    "req-a")
    assert event == DeadLetterItem(b, "user.settings.changed", "user-2", None, 1, "cannot dispatch", T0, None)


async def test_replay_revives_every_dead_part_of_an_event(clocked: Store) -> None:
    a, b = await _dead_letters(clocked)
    async with clocked.transaction() as tx:
        assert await tx.checkpoints.replay(a) == 2
        assert await tx.checkpoints.replay(a) == 0
        assert await tx.checkpoints.replay(b) == 1
        assert await tx.checkpoints.replay(999) == 0
        revived = await tx.checkpoints.claim(ROLLUPS, "w")
        (event,) = await tx.outbox.claim("d")
        assert await tx.checkpoints.list_dead() == []
    assert [(c.event_id, c.attempts, c.status) for c in revived] == [(a, 1, "processing")]
    assert (event.id, event.attempts) == (b, 1)


async def test_discard_deletes_the_dead_parts_and_returns_the_checkpoints(clocked: Store) -> None:
    a, b = await _dead_letters(clocked)
    async with clocked.transaction() as tx:
        discarded, event_went = await tx.checkpoints.discard(a)
        assert not event_went  # completed in the outbox: only its dead checkpoints are dead letters
        assert await tx.checkpoints.discard(a) == ([], False)
        assert await tx.checkpoints.discard(b) == ([], True)  # the dead outbox event goes; it has no checkpoints
        assert await tx.checkpoints.discard(b) == ([], False)
        assert await tx.checkpoints.list_dead() == []
        assert await tx.outbox.get(b) is None
        assert (await tx.outbox.get(a)) is not None  # completed in the outbox: not a dead letter
    assert [(c.handler, c.wm_from, c.wm_to, c.status) for c in discarded] == [
        (ROLLUPS, 0, 5, "dead"), (NIGHTS, 0, 5, "dead")]


async def test_lag_and_state_describe_unfinished_work(clocked: Store, clock: ManualClock) -> None:
    async with clocked.transaction() as tx:
        await tx.checkpoints.create_many([cp(1), cp(2, user="user-2")], owner="w")
        await tx.checkpoints.create_many([cp(1, NIGHTS)])
    clock.advance(10)
    async with clocked.transaction() as tx:
        await tx.checkpoints.create_many([cp(3), cp(4)])
        await tx.checkpoints.fail(CheckpointKey(2, ROLLUPS), "w", "x", retryable=False)
        await tx.checkpoints.complete_many("w", [CheckpointKey(1, ROLLUPS)])
    clock.advance(5)
    async with clocked.transaction(readonly=True) as tx:
        lag = await tx.checkpoints.lag()
        mine, other, night, nobody = await tx.run(
            tx.checkpoints.state(USER, ROLLUPS), tx.checkpoints.state("user-2", ROLLUPS),
            tx.checkpoints.state(USER, NIGHTS), tx.checkpoints.state("nobody", ROLLUPS))
    assert lag == [HandlerLag(ROLLUPS, pending=2, processing=0, failed=0, dead=1, oldest_age_seconds=5.0),
                   HandlerLag(NIGHTS, pending=1, processing=0, failed=0, dead=0, oldest_age_seconds=15.0)]
    assert mine == ProjectionState(has_dead=False, retry_waiting=False, unfinished=2)
    assert other == ProjectionState(has_dead=True, retry_waiting=False, unfinished=1)
    assert night == ProjectionState(has_dead=False, retry_waiting=False, unfinished=1)
    assert nobody == ProjectionState(False, False, 0)


# --- PostgreSQL concurrency --------------------------------------------------------------


@pytest.mark.postgres
async def test_concurrent_claimers_skip_each_others_checkpoints(clocked: Store, store_backend: str) -> None:
    if store_backend != "postgres":
        pytest.skip("SKIP LOCKED: SQLite has one writer")
    async with clocked.transaction() as tx:
        await tx.checkpoints.create_many([cp(i) for i in range(1, 21)])
    first = clocked.transaction()
    second = clocked.transaction()
    with trio.fail_after(10):  # without SKIP LOCKED the second claim would wait for the first's locks
        async with first, second:
            # Both transactions stay open: the first's row locks are held while the second claims.
            a = await first.checkpoints.claim(ROLLUPS, "a", limit=8)
            b = await second.checkpoints.claim(ROLLUPS, "b", limit=100)
            c = await first.checkpoints.claim(ROLLUPS, "a", limit=100)
    assert [x.event_id for x in a] == list(range(1, 9))
    assert [x.event_id for x in b] == list(range(9, 21)) and c == []


@pytest.mark.postgres
async def test_lock_user_blocks_a_second_transaction_until_the_first_ends(clocked: Store,
                                                                          store_backend: str) -> None:
    if store_backend != "postgres":
        pytest.skip("an advisory lock is PostgreSQL's; SQLite's single writer serializes")
    order: list[str] = []

    async def second() -> None:
        async with clocked.transaction() as tx:
            await tx.checkpoints.lock_user(USER, ROLLUPS)
            order.append("second locked")

    async def waiting_advisory_locks() -> int:
        async with clocked.transaction(readonly=True) as probe:
            sql = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            return int(await Op(probe, fetchval(sql)))

    with trio.fail_after(10):
        async with clocked.transaction() as first:
            await first.checkpoints.lock_user(USER, ROLLUPS)
            await first.checkpoints.lock_user(USER, NIGHTS)  # another handler: another lock
            async with trio.open_nursery() as nursery:
                nursery.start_soon(second)
                # The waiter is on PostgreSQL's side, where no trio event can see it: poll pg_locks.
                for _ in range(1000):
                    if await waiting_advisory_locks():
                        break
                    await trio.sleep(0.01)
                order.append("first still holds")
                await first.commit()
    assert order == ["first still holds", "second locked"]


async def test_lock_user_returns_nothing_and_checks_its_arguments(store: Store) -> None:
    async with store.transaction() as tx:
        assert await tx.run(tx.checkpoints.lock_user(USER, ROLLUPS)) == (None,)
        with pytest.raises(InvalidData):
            tx.checkpoints.lock_user("", ROLLUPS)


# --- watermarks --------------------------------------------------------------------------


async def test_advance_absorbs_ranges_completed_out_of_order(store: Store) -> None:
    async with store.transaction() as tx:
        assert await tx.watermarks.projected(USER, ROLLUPS) == 0
        assert await tx.watermarks.advance(USER, ROLLUPS, []) == 0
        assert await tx.watermarks.advance(USER, ROLLUPS, [(5, 9)]) == 0  # waits for (0, 5]
        assert await tx.watermarks.advance(USER, ROLLUPS, [(2, 5), (12, 15)]) == 0  # (0, 2] still missing
        assert await tx.watermarks.advance(USER, NIGHTS, [(0, 2)]) == 2  # another handler's own mark
        assert await tx.watermarks.advance(USER, ROLLUPS, [(0, 2)]) == 9  # (0, 9] complete; (12, 15] waits
        assert await tx.watermarks.advance(USER, ROLLUPS, [(5, 9), (0, 3)]) == 9  # redelivered: no change
        assert await tx.watermarks.advance(USER, ROLLUPS, [(9, 12)]) == 15
        assert await tx.watermarks.projected(USER, ROLLUPS) == 15
        marks = await tx.watermarks.get(USER)
        for bad in ([(3, 3)], [(-1, 2)], [(1,)], "ab"):
            with pytest.raises(InvalidData):
                tx.watermarks.advance(USER, ROLLUPS, bad)  # type: ignore[arg-type]
    assert dict(marks.projected) == {ROLLUPS: 15, NIGHTS: 2}
    async with store.transaction(readonly=True) as tx:
        left: Any = await Op(tx, fetchval("SELECT count(*) FROM projection_watermark_ranges"))
    assert left == 0  # every absorbed range was deleted


async def test_advance_many_in_order_and_out_of_order_users_in_one_batch(store: Store) -> None:
    # In-order runs take PostgreSQL's one-statement path; a gap, a first advance and waiting ranges the general one.
    async with store.transaction() as tx:
        assert await tx.watermarks.advance_many(ROLLUPS, {"a": [(0, 1)], "b": [(0, 2)], "c": [(3, 4)]}) == {
            "a": 1, "b": 2, "c": 0}
        assert await tx.watermarks.advance_many(ROLLUPS, {"a": [(2, 3), (1, 2)], "b": [(2, 5)], "c": [(0, 3)]}) == {
            "a": 3, "b": 5, "c": 4}
        assert await tx.watermarks.advance_many(ROLLUPS, {"a": [(4, 6)], "b": [(5, 6)], "c": [(4, 5), (6, 7)]}) == {
            "a": 3, "b": 6, "c": 5}  # a waits for (3, 4]; c's (6, 7] waits for (5, 6]
        assert await tx.watermarks.advance_many(ROLLUPS, {"a": [(3, 4)], "b": [(1, 6)], "c": [(5, 6)]}) == {
            "a": 6, "b": 6, "c": 7}  # b's range is old news: no change
        left: Any = await Op(tx, fetchval("SELECT count(*) FROM projection_watermark_ranges"))
    assert left == 0


async def test_advance_where_free_advances_every_handler_of_the_batch(store: Store) -> None:
    async with store.transaction() as tx:
        marks = await tx.watermarks.advance_where_free({ROLLUPS: {"a": [(0, 2)], "b": [(1, 2)]},
                                                        NIGHTS: {"a": [(0, 1), (1, 2)]}})
        assert marks == {ROLLUPS: {"a": 2, "b": 0}, NIGHTS: {"a": 2}}
        assert await tx.watermarks.advance_where_free({}) == {}
        with pytest.raises(InvalidData):
            tx.watermarks.advance_where_free({ROLLUPS: {"a": [(2, 2)]}})
    async with store.transaction(readonly=True) as tx:
        got = await tx.watermarks.get("a")
    assert dict(got.projected) == {ROLLUPS: 2, NIGHTS: 2}


@pytest.mark.postgres
async def test_advance_where_free_leaves_out_a_pair_whose_lock_another_transaction_holds(
        store: Store, store_backend: str) -> None:
    if store_backend != "postgres":
        pytest.skip("an advisory lock is PostgreSQL's; SQLite's single writer serializes")
    with trio.fail_after(10):
        async with store.transaction() as holder:
            await holder.checkpoints.lock_user(USER, NIGHTS)  # a unit of work of sleep nights for the user
            async with store.transaction() as tx:  # never waits on it
                marks = await tx.watermarks.advance_where_free({NIGHTS: {USER: [(0, 1)], "other": [(0, 1)]},
                                                                ROLLUPS: {USER: [(0, 1)]}})
            assert marks == {NIGHTS: {"other": 1}, ROLLUPS: {USER: 1}}
            await holder.commit()
    async with store.transaction() as tx:  # free again: taken
        assert await tx.watermarks.advance_where_free({NIGHTS: {USER: [(0, 1)]}}) == {NIGHTS: {USER: 1}}


# --- migration 2 over existing data (SQLite) ----------------------------------------------


async def test_migration_2_renames_done_and_keeps_ids_and_one_unfinished_event_per_hash(tmp_path: Any) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                 " applied_at INTEGER NOT NULL) STRICT")
    for statement in SQLITE_MIGRATIONS[0].statements:
        conn.execute(statement)
    conn.execute("INSERT INTO schema_migrations VALUES (1, 'initial schema', 0)")
    insert = ("INSERT INTO outbox_events (id, user_id, type, payload, event_hash, status, attempts,"
              " next_attempt_at, created_at, updated_at) VALUES (?, 'u', 'e', '{}', ?, ?, 0, 0, 0, 0)")
    for ident, digest, status in [(1, "h1", "done"), (2, "h2", "pending"), (3, "h2", "pending"),
                                  (4, "h1", "pending"), (40, "h3", "done")]:
        conn.execute(insert, (ident, digest, status))
    conn.execute("DELETE FROM outbox_events WHERE id = 40")  # purged: its id stays used
    conn.close()
    async with open_store(f"sqlite:///{path}", config=StoreConfig(seed=7)) as store:
        assert store.applied_migrations == [m.version for m in SQLITE_MIGRATIONS[1:]]
        async with store.transaction() as tx:
            events = await tx.outbox.get_many([1, 2, 3, 4])
            fresh = await tx.outbox.enqueue("u", "e", {"new": True})
            settings = await tx.users.get_settings("u")
    assert [(e.id, e.status) for e in events] == [(1, "completed"), (2, "pending"), (3, "completed"),
                                                  (4, "pending")]
    assert fresh.id == 41 and settings.source_priority == ()


@pytest.mark.postgres
def test_migration_2_on_postgresql_renames_done_and_keeps_one_unfinished_event_per_hash(
    postgres_dsn: str, postgres_schema: str
) -> None:
    import asyncio

    import asyncpg

    from storage._migrations.postgres import MIGRATIONS as PG_MIGRATIONS

    async def at_version_1() -> None:
        conn = await asyncpg.connect(postgres_dsn)
        try:
            await conn.execute(f'CREATE SCHEMA "{postgres_schema}"; SET search_path TO "{postgres_schema}"')
            await conn.execute("CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
                               " applied_at timestamptz NOT NULL DEFAULT now())")
            for statement in PG_MIGRATIONS[0].statements:
                await conn.execute(statement)
            await conn.execute("INSERT INTO schema_migrations (version, name) VALUES (1, 'initial schema')")
            for digest, status in [("h1", "done"), ("h2", "pending"), ("h2", "processing"), ("h1", "pending")]:
                await conn.execute(
                    "INSERT INTO outbox_events (user_id, type, payload, event_hash, status, attempts,"
                    " next_attempt_at, created_at, updated_at) VALUES ('u', 'e', '{}', $1, $2, 0, now(), now(), now())",
                    digest, status)
        finally:
            await conn.close()

    async def after_migration_2() -> None:
        config = StoreConfig(seed=7, pg_schema=postgres_schema, pg_max_size=2)
        async with open_store(postgres_dsn, config=config) as store:
            assert store.applied_migrations == [m.version for m in PG_MIGRATIONS[1:]]
            async with store.transaction() as tx:
                events = await tx.outbox.get_many([1, 2, 3, 4])
                settings = await tx.users.get_settings("u")
        assert [(e.id, e.status) for e in events] == [(1, "completed"), (2, "pending"), (3, "completed"),
                                                      (4, "pending")]
        assert settings.source_priority == ()

    asyncio.run(at_version_1())
    trio.run(after_migration_2)
