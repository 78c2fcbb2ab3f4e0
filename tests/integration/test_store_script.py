"""``tx.script(fn)``: ops decided between results, in one crossing (both backends, see conftest)."""

from __future__ import annotations

from collections.abc import Generator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio

from storage import (
    DeletedSamples,
    Enqueued,
    InvalidData,
    NotFound,
    SampleIn,
    SampleKey,
    SerializationFailure,
    Store,
    StoreError,
    UpsertCounts,
    UserSettings,
)
from storage._tx import Op

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
USER = "user-1"

Script = Generator[Op[Any], Any, Any]


def sample(i: int, *, metric: str = "heart_rate", value: float = 60.0) -> SampleIn:
    start = T0 + timedelta(minutes=i)
    return SampleIn("watch", f"r{i}", metric, value, "bpm", start, start + timedelta(seconds=30))


def key(i: int) -> SampleKey:
    return SampleKey("watch", f"r{i}", T0 + timedelta(minutes=i))


async def state(store: Store) -> tuple[list[str], int, dict[str, int]]:
    """What is committed: live sample ids, the watermark, outbox events per status."""
    async with store.transaction(readonly=True) as tx:
        page, marks, counts = await tx.run(
            tx.samples.query(USER, limit=1000), tx.watermarks.get(USER), tx.outbox.stats()
        )
    tally = {"pending": counts.pending, "processing": counts.processing, "completed": counts.completed,
             "dead": counts.dead}
    return [s.source_record_id for s in page.items], marks.watermark, tally


NOTHING = ([], 0, {"pending": 0, "processing": 0, "completed": 0, "dead": 0})


# --- results decide what comes next ------------------------------------------------------


async def test_a_script_reads_then_decides_what_to_write(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.users.put_settings(USER, UserSettings(True, ("steps",), "UTC"))
    rows = [sample(0), sample(1, metric="steps"), sample(2), sample(3, metric="steps")]
    seen: list[Any] = []

    def ingest() -> Script:
        settings = yield tx.users.get_settings(USER)
        seen.append(settings)
        if not settings.allow_health_data_upload:
            return None
        allowed = [r for r in rows if r.metric not in settings.blocked_metrics]
        counts = yield tx.samples.upsert_many(USER, allowed)
        seen.append(counts)
        mark = yield tx.watermarks.bump(USER, by=counts.inserted)
        event = yield tx.outbox.enqueue(USER, "health.samples.changed", {"watermark": mark})
        seen.append(event)
        return counts, mark

    async with store.transaction() as tx:
        (result,) = await tx.commit(tx.script(ingest))
    # The inner results came through their ``post``: model objects, not driver rows.
    settings, counts, event = seen
    assert settings == UserSettings(True, ("steps",), "UTC")
    assert type(counts) is UpsertCounts and counts == UpsertCounts(inserted=2, updated=0)
    assert type(event) is Enqueued and event.created
    assert result == (UpsertCounts(2, 0), 2)
    assert await state(store) == (["r0", "r2"], 2, {"pending": 1, "processing": 0, "completed": 0, "dead": 0})
    async with store.transaction(readonly=True) as tx:
        stored = await tx.outbox.get(event.id)
    assert stored is not None and stored.payload == {"watermark": 2}

    # Same script, other settings: the read decides that nothing is written.
    async with store.transaction() as tx:
        await tx.users.put_settings(USER, UserSettings(False, (), "UTC"))
    seen.clear()
    async with store.transaction() as tx:
        (result,) = await tx.commit(tx.script(ingest))
    assert result is None and seen == [UserSettings(False, (), "UTC")]
    assert await state(store) == (["r0", "r2"], 2, {"pending": 1, "processing": 0, "completed": 0, "dead": 0})


async def test_a_script_branches_on_a_count_and_on_upsert_counts(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.samples.upsert_many(USER, [sample(0), sample(1)])

    def upsert_then_tidy() -> Script:
        counts = yield tx.samples.upsert_many(USER, [sample(1, value=70.0), sample(2)])
        deleted = None
        if counts.updated:  # only when something was already there
            deleted = yield tx.samples.soft_delete_many(USER, [key(0)])
        pending = (yield tx.outbox.stats()).pending
        if pending == 0:
            yield tx.outbox.enqueue(USER, "tidy", {"updated": counts.updated}, dedupe_key="tidy")
        return counts, deleted, pending

    async with store.transaction() as tx:
        (first,) = await tx.commit(tx.script(upsert_then_tidy))
    counts, deleted, pending = first
    assert counts == UpsertCounts(inserted=1, updated=1)
    assert type(deleted) is DeletedSamples and deleted == DeletedSamples(1, (("heart_rate", T0),))
    assert pending == 0
    assert await state(store) == (["r1", "r2"], 0, {"pending": 1, "processing": 0, "completed": 0, "dead": 0})
    async with store.transaction() as tx:
        (second,) = await tx.commit(tx.script(upsert_then_tidy))
    assert second == (UpsertCounts(0, 2), DeletedSamples(0, ()), 1)  # r0 already gone; event there
    async with store.transaction(readonly=True) as tx:
        r1 = await tx.samples.get(USER, key(1))
    assert r1 is not None and r1.value == 70.0 and r1.revision == 3


# --- composition -------------------------------------------------------------------------


async def test_the_return_value_is_the_result_and_scripts_compose_in_order(store: Store) -> None:
    def read_then_bump() -> Script:
        before = (yield tx.watermarks.get(USER)).watermark
        after = yield tx.watermarks.bump(USER, by=before + 1)
        return {"before": before, "after": after}

    async with store.transaction() as tx:
        tx.defer(tx.watermarks.bump(USER))  # deferred: runs first, in the same crossing
        a, b, c = await tx.commit(
            tx.watermarks.bump(USER, by=2), tx.script(read_then_bump), tx.watermarks.bump(USER, by=10)
        )
    assert (a, b, c) == (3, {"before": 3, "after": 7}, 17)
    assert (await state(store))[1] == 17

    async with store.transaction() as tx:
        x, y = await tx.run(tx.script(read_then_bump), tx.watermarks.get(USER))
        z = await tx.script(read_then_bump)  # awaited on its own
        (w,) = await tx.commit(tx.script(read_then_bump))
    assert x == {"before": 17, "after": 35} and y.watermark == 35
    assert z == {"before": 35, "after": 71} and w == {"before": 71, "after": 143}
    assert (await state(store))[1] == 143


async def test_a_script_that_yields_nothing_returns_its_value(store: Store) -> None:
    def constant() -> Script:
        return "done"
        yield  # a generator all the same

    async with store.transaction() as tx:
        mark, done = await tx.commit(tx.watermarks.bump(USER), tx.script(constant))
    assert (mark, done) == (1, "done")
    assert await state(store) == ([], 1, NOTHING[2])


# --- failures roll everything back -------------------------------------------------------


async def test_an_exception_in_a_script_rolls_back_the_whole_transaction(store: Store) -> None:
    reached: list[str] = []

    def crash() -> Script:
        yield tx.samples.upsert_many(USER, [sample(1)])
        yield tx.outbox.enqueue(USER, "e", {})
        reached.append("wrote")
        raise ValueError("the script changed its mind")

    with pytest.raises(ValueError, match="changed its mind"):
        async with store.transaction() as tx:
            await tx.run(tx.samples.upsert_many(USER, [sample(0)]), tx.watermarks.bump(USER))
            await tx.commit(tx.script(crash))
    assert reached == ["wrote"] and tx.finished
    assert await state(store) == NOTHING
    async with store.transaction() as tx:  # the writer/connection was given back
        assert await tx.watermarks.bump(USER) == 1


async def test_a_caught_script_error_does_not_let_the_transaction_look_committed(store: Store) -> None:
    def crash() -> Script:
        yield tx.watermarks.bump(USER)
        raise ValueError("boom")

    with pytest.raises(StoreError, match="rolled back by an earlier error"):
        async with store.transaction() as tx:
            await tx.samples.upsert_many(USER, [sample(0)])
            with pytest.raises(ValueError, match="boom"):
                await tx.run(tx.script(crash))
            with pytest.raises(StoreError, match="finished"):
                await tx.watermarks.get(USER)
    assert await state(store) == NOTHING


async def test_an_inner_op_error_propagates_and_rolls_back(store: Store) -> None:
    def complete_missing() -> Script:
        yield tx.samples.upsert_many(USER, [sample(0)])
        yield tx.ingest.complete(USER, "no-such-request", {})
        raise AssertionError("not reached")

    with pytest.raises(NotFound):
        async with store.transaction() as tx:
            await tx.commit(tx.watermarks.bump(USER), tx.script(complete_missing))
    assert await state(store) == NOTHING


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (lambda tx: tx.watermarks.bump(USER, by=0), "by"),
        (
            lambda tx: tx.samples.upsert_many(USER, [sample(5), sample(6, value=float("nan"))]),
            "samples[1].value",
        ),
        (lambda tx: tx.outbox.enqueue(USER, "e", {}, available_at=datetime(2026, 1, 1)), "available_at"),
    ],
)
async def test_invalid_data_making_an_inner_op_propagates_and_nothing_is_written(
    store: Store, bad: Any, field: str
) -> None:
    def script() -> Script:
        yield tx.samples.upsert_many(USER, [sample(0)])
        yield tx.watermarks.bump(USER)
        yield bad(tx)
        raise AssertionError("not reached")

    with pytest.raises(InvalidData) as caught:
        async with store.transaction() as tx:
            await tx.commit(tx.outbox.enqueue(USER, "e", {}), tx.script(script))
    assert caught.value.field == field
    assert await state(store) == NOTHING


# --- misuse ------------------------------------------------------------------------------


async def test_yielding_something_that_is_not_an_op_is_refused(store: Store) -> None:
    def script() -> Script:
        yield tx.watermarks.bump(USER)
        yield 42  # type: ignore[misc]

    with pytest.raises(StoreError, match="a script yields ops of its transaction, not 42"):
        async with store.transaction() as tx:
            await tx.commit(tx.script(script))
    assert await state(store) == NOTHING


async def test_yielding_an_op_of_another_transaction_is_refused(store: Store) -> None:
    other = store.transaction()
    foreign = other.watermarks.bump(USER, by=5)

    def script() -> Script:
        yield tx.samples.upsert_many(USER, [sample(0)])
        yield foreign

    with pytest.raises(StoreError, match="only run in the transaction that created it"):
        async with store.transaction() as tx:
            await tx.commit(tx.script(script))
    assert await state(store) == NOTHING
    # The foreign op was not consumed: its own transaction still runs it.
    async with other:
        assert await other.commit(foreign) == (5,)
    assert await state(store) == ([], 5, NOTHING[2])


async def test_yielding_an_op_twice_is_refused(store: Store) -> None:
    def twice() -> Script:
        bump = tx.watermarks.bump(USER)
        yield bump
        yield bump

    with pytest.raises(StoreError, match="runs only once"):
        async with store.transaction() as tx:
            await tx.commit(tx.script(twice))
    assert await state(store) == NOTHING


async def test_yielding_an_op_that_already_ran_is_refused(store: Store) -> None:
    with pytest.raises(StoreError, match="runs only once"):
        async with store.transaction() as tx:
            bump = tx.watermarks.bump(USER)
            await bump

            def again() -> Script:
                yield tx.samples.upsert_many(USER, [sample(0)])
                yield bump

            await tx.commit(tx.script(again))
    assert await state(store) == NOTHING


async def test_an_op_made_but_never_yielded_is_refused(store: Store) -> None:
    def forgetful() -> Script:
        yield tx.samples.upsert_many(USER, [sample(0)])
        tx.watermarks.bump(USER)  # made, never yielded: must not be silently dropped
        yield tx.outbox.enqueue(USER, "e", {})
        return "finished"

    with pytest.raises(StoreError, match="a script made ops it never yielded"):
        async with store.transaction() as tx:
            await tx.commit(tx.script(forgetful))
    assert await state(store) == NOTHING


# --- commit hooks ------------------------------------------------------------------------


async def test_outbox_events_of_a_script_are_announced_after_commit_only(store: Store) -> None:
    def enqueue(payload: dict[str, Any], *, crash: bool = False) -> Any:
        def script() -> Script:
            first = yield tx.outbox.enqueue(USER, "e", payload)
            keyed = yield tx.outbox.enqueue(USER, "e", {**payload, "keyed": True}, dedupe_key=f"k{payload['n']}")
            duplicate = yield tx.outbox.enqueue(USER, "e", payload, dedupe_key=f"k{payload['n']}")
            assert not duplicate.created and duplicate.id == keyed.id
            if crash:
                raise ValueError("rolled back")
            return first.id, keyed.id

        return script

    async with store.outbox_notifications() as heard:
        with pytest.raises(ValueError, match="rolled back"):
            async with store.transaction() as tx:
                await tx.commit(tx.script(enqueue({"n": 0}, crash=True)))
        with pytest.raises(RuntimeError):
            async with store.transaction() as tx:
                await tx.run(tx.script(enqueue({"n": 1})))
                raise RuntimeError("the body failed after the script ran")
        async with store.transaction() as tx:
            (ids,) = await tx.run(tx.script(enqueue({"n": 2})))
            with trio.move_on_after(0.2):
                assert await heard.receive() is None, "notified before COMMIT"
            (more,) = await tx.commit(tx.script(enqueue({"n": 3})))
        with trio.fail_after(5):
            got = [await heard.receive() for _ in range(4)]
        assert got == [*ids, *more]  # each new event once, in order; none for the duplicates
        with trio.move_on_after(0.2):
            assert await heard.receive() is None, "notified for a rolled-back or duplicate event"
    assert (await state(store))[2]["pending"] == 4


# --- retries -----------------------------------------------------------------------------


async def test_transact_reruns_a_unit_of_work_whose_script_hit_a_transient_error(store: Store) -> None:
    runs = 0

    async def work(tx: Any) -> Any:
        nonlocal runs
        runs += 1
        attempt = runs
        mark = await tx.watermarks.bump(USER)  # an earlier crossing, undone with the rest

        def script() -> Script:
            counts = yield tx.samples.upsert_many(USER, [sample(attempt)])
            event = yield tx.outbox.enqueue(USER, "e", {"attempt": attempt})
            if attempt == 1:
                raise SerializationFailure("injected: transient")
            return counts, event.id

        (result,) = await tx.commit(tx.script(script))
        return mark, result

    async with store.outbox_notifications() as heard:
        mark, (counts, event_id) = await store.transact(work)
        with trio.fail_after(5):
            assert await heard.receive() == event_id
        with trio.move_on_after(0.2):
            assert await heard.receive() is None, "the failed attempt was announced"
    assert runs == 2 and mark == 1 and counts == UpsertCounts(1, 0)
    # Nothing of the first attempt survived, neither its first crossing nor its script.
    assert await state(store) == (["r2"], 1, {"pending": 1, "processing": 0, "completed": 0, "dead": 0})
    async with store.transaction(readonly=True) as tx:
        event = await tx.outbox.get(event_id)
    assert event is not None and event.payload == {"attempt": 2}


async def test_a_transient_error_in_a_first_crossing_script_reruns_the_script(store: Store) -> None:
    # The rerun must not keep the rolled-back run's commit hooks (SQLite announces after COMMIT).
    runs = 0

    def script() -> Script:
        nonlocal runs
        runs += 1
        counts = yield tx.samples.upsert_many(USER, [sample(runs)])
        event = yield tx.outbox.enqueue(USER, "e", {"run": runs})
        if runs == 1:
            raise SerializationFailure("injected: transient")
        return counts, event.id

    async with store.outbox_notifications() as heard:
        async with store.transaction() as tx:
            ((counts, event_id),) = await tx.commit(tx.script(script))
        with trio.fail_after(5):
            assert await heard.receive() == event_id
        with trio.move_on_after(0.2):
            assert await heard.receive() is None, "an event was announced twice or from the failed run"
    assert runs == 2 and counts == UpsertCounts(1, 0)
    assert await state(store) == (["r2"], 0, {"pending": 1, "processing": 0, "completed": 0, "dead": 0})
