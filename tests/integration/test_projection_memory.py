"""Fresh events run in memory: no checkpoint row unless a handler's work cannot finish there.

A whole projection domain on each backend (SQLite: claims write a lease; PostgreSQL: claims are held by an open
transaction's row locks), trio's real clock with short polls, the store's wall clock a ``ManualClock`` (so a
retry's backoff ends when the test says). Two handlers: ``first`` and ``second``, which depends on ``first``
(runs after it for the same event).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import asyncpg
import pytest
import trio
import trio_asyncio

from actors.projection import (
    DispatcherConfig,
    HandlerConfig,
    ProjectionConfig,
    ProjectionDomain,
    ProjectionService,
    UserWork,
)
from kernel import ActorSystem, Supervisor
from storage import Store, StoreConfig, Transaction, open_store
from storage.testing import ManualClock


@dataclass
class Journal:
    runs: list[tuple[str, int, float]] = field(default_factory=list)  # (handler, event id, trio time)
    fail_first: dict[int, int] = field(default_factory=dict)  # event id -> how many more times ``first`` fails it
    gate: trio.Event | None = None  # ``first`` waits for it before each unit

    def done(self, handler: str) -> set[int]:
        return {e for h, e, _ in self.runs if h == handler}


class Handler:
    def __init__(self, name: str, journal: Journal, depends_on: str | None = None) -> None:
        self.name = name
        self.depends_on = depends_on
        self.journal = journal

    def subscribes(self, event_type: str) -> bool:
        return True

    def concerns(self, work: UserWork) -> bool:
        # ``first`` keeps a read model of steps: an event naming only other metrics cannot change it.
        return self.name != "first" or work.full or any(metric == "steps" for metric, _ in work.keys)

    async def project(self, tx: Transaction, work: UserWork) -> None:
        if self.name == "first" and self.journal.gate is not None:
            await self.journal.gate.wait()
        for c in work.checkpoints:
            if self.name == "first" and self.journal.fail_first.get(c.event_id, 0) > 0:
                self.journal.fail_first[c.event_id] -= 1
                raise RuntimeError(f"first fails event {c.event_id}")
        self.journal.runs.extend((self.name, c.event_id, trio.current_time()) for c in work.checkpoints)


@asynccontextmanager
async def pipeline(url: str, store_config: StoreConfig, journal: Journal, clock: ManualClock
                   ) -> AsyncIterator[tuple[Store, ProjectionService]]:
    config = ProjectionConfig(dispatcher=DispatcherConfig(poll_interval=0.05),
                              handler=HandlerConfig(poll_interval=0.05, timeout=10.0), figures_interval=None)
    async with trio_asyncio.open_loop(), open_store(url, config=replace(store_config, clock=clock)) as store:
        domain = ProjectionDomain(store, config, projections=[Handler("second", journal, depends_on="first"),
                                                              Handler("first", journal)])
        async with ActorSystem.start(Supervisor("root", children=[domain.subtree()])) as system:
            yield store, domain.service(system)
            await system.stop()


async def enqueue(store: Store, count: int, users: tuple[str, ...] = ("alice",), metric: str | None = None
                  ) -> list[int]:
    """``count`` events; ``metric``: each names that metric's key (otherwise none: a full recompute)."""
    ids = []
    keys = {"keys": [{"metric": metric, "date": "2026-11-24"}]} if metric else {}
    async with store.transaction() as tx:
        for i in range(count):
            user = users[i % len(users)]
            (mark,) = await tx.run(tx.watermarks.bump(user, 1))
            (event,) = await tx.run(tx.outbox.enqueue(user, "health.samples.changed",
                                                      {"watermark": {"from": mark - 1, "to": mark}, **keys}))
            ids.append(event.id)
        await tx.commit()
    return ids


_CHECKPOINTS = "SELECT event_id, handler, status, depends_on, attempts FROM projection_checkpoints ORDER BY 1, 2"


async def rows(store: Store, url: str, store_config: StoreConfig, user: str = "alice"
               ) -> tuple[list[tuple[int, str, str, str | None, int]], dict[str, int], dict[str, int]]:
    async with store.transaction(readonly=True) as tx:
        stats, first, second = await tx.commit(tx.outbox.stats(), tx.watermarks.projected(user, "first"),
                                               tx.watermarks.projected(user, "second"))
    if url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db:
            checkpoints = [tuple(r) for r in db.execute(_CHECKPOINTS).fetchall()]
    else:
        async def fetch() -> list[Any]:
            conn = await asyncpg.connect(url, server_settings={"search_path": str(store_config.pg_schema)})
            try:
                return list(await conn.fetch(_CHECKPOINTS))
            finally:
                await conn.close()

        checkpoints = [tuple(r) for r in await trio_asyncio.aio_as_trio(fetch)()]
    return checkpoints, {"completed": stats.completed, "processing": stats.processing}, {"first": first,
                                                                                         "second": second}


async def until(predicate: object, timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():  # type: ignore[operator]  # noqa: ASYNC110  (polling what the handlers did)
            await trio.sleep(0.01)


async def test_fresh_events_run_in_memory_dependents_after_their_dependency_and_leave_no_checkpoints(
        store_url: str, store_config: StoreConfig) -> None:
    journal = Journal()
    async with pipeline(store_url, store_config, journal, ManualClock()) as (store, _):
        ids = await enqueue(store, 5)
        await until(lambda: journal.done("second") == set(ids))
        with trio.fail_after(10):
            while (result := await rows(store, store_url, store_config))[1]["completed"] < 5:  # noqa: ASYNC110  (polling the store)
                await trio.sleep(0.01)
    checkpoints, outbox, marks = result
    assert checkpoints == []  # nothing was stored: every handler ran every event in memory
    assert outbox == {"completed": 5, "processing": 0} and marks == {"first": 5, "second": 5}
    ran = {(h, e): t for h, e, t in journal.runs}
    assert len(journal.runs) == 10 and all(ran[("first", e)] <= ran[("second", e)] for e in ids)


async def test_a_failure_in_memory_is_stored_with_its_backoff_and_the_dependent_waits_for_that_row(
        store_url: str, store_config: StoreConfig) -> None:
    journal = Journal()
    clock = ManualClock()
    async with pipeline(store_url, store_config, journal, clock) as (store, service):
        # Bob's event fails in its batch and again when retried alone (a failed unit is retried per user).
        journal.fail_first = {2: 2}
        ids = await enqueue(store, 3, ("alice", "bob", "carol"))
        assert ids == [1, 2, 3]
        await until(lambda: journal.done("second") == {ids[0], ids[2]})
        with trio.fail_after(10):
            while (result := await rows(store, store_url, store_config, "bob"))[1]["completed"] < 3:  # noqa: ASYNC110  (polling the store)
                await trio.sleep(0.01)
        checkpoints, outbox, marks = result
        # The event is done with the outbox: what is left of it is carried by its checkpoints.
        assert checkpoints == [(ids[1], "first", "failed", None, 1), (ids[1], "second", "pending", "first", 0)]
        assert outbox == {"completed": 3, "processing": 0} and marks == {"first": 0, "second": 0}
        clock.advance(301)  # the backoff is over
        await service.process_due()
        await until(lambda: journal.done("second") == set(ids))
        with trio.fail_after(10):
            while (result := await rows(store, store_url, store_config, "bob"))[2] != {"first": 1, "second": 1}:  # noqa: ASYNC110  (polling the store)
                await trio.sleep(0.01)
    checkpoints, _, _ = result
    assert checkpoints == [(ids[1], "first", "completed", None, 2), (ids[1], "second", "completed", "first", 1)]
    # (``first`` may show a run of alice's that its failed batch rolled back; ``second`` never failed.)
    assert journal.done("first") == set(ids)
    assert sorted(e for h, e, _ in journal.runs if h == "second") == sorted(ids)


async def test_work_held_in_memory_shows_as_processing_lag_with_its_age(store_url: str,
                                                                      store_config: StoreConfig) -> None:
    journal = Journal(gate=trio.Event())
    async with pipeline(store_url, store_config, journal, ManualClock()) as (store, service):
        await enqueue(store, 4)
        with trio.fail_after(10):
            while not any(row.handler == "first" for row in service.figures().lag):  # noqa: ASYNC110  (polling)
                await trio.sleep(0.01)
        await trio.sleep(0.2)
        lag = {row.handler: row for row in service.figures().lag}
        # Nothing is stored: both handlers' lag is the dispatcher's in-memory work (second waits behind first).
        assert (lag["first"].pending, lag["first"].processing) == (0, 4)
        assert (lag["second"].pending, lag["second"].processing) == (0, 4)
        assert lag["first"].oldest_age_seconds is not None and lag["first"].oldest_age_seconds >= 0.2
        assert journal.gate is not None
        journal.gate.set()
        await until(lambda: len(journal.done("second")) == 4)
        with trio.fail_after(10):
            while service.figures().lag:  # noqa: ASYNC110  (polling the figures)
                await trio.sleep(0.01)


async def test_work_a_handler_cannot_take_is_stored_in_statements_within_the_stores_batch_limit(
        store_url: str, store_config: StoreConfig) -> None:
    """The first handler's breaker is open: every event's work for it (and its dependent) is stored pending at
    the claim, ten rows against a store that takes at most four per statement, and batches of four events."""
    journal = Journal()
    limited = replace(store_config, limits=replace(store_config.limits, max_batch_rows=4))
    async with pipeline(store_url, limited, journal, ManualClock()) as (store, service):
        for _ in range(5):
            service.gates["first"].breaker.record_failure()
        assert not service.gates["first"].taking_work
        ids = await enqueue(store, 5)
        with trio.fail_after(10):
            while (result := await rows(store, store_url, limited))[1]["completed"] < 5:  # noqa: ASYNC110  (polling)
                await trio.sleep(0.01)
    checkpoints, outbox, marks = result
    assert sorted((e, h, s, d) for e, h, s, d, _ in checkpoints) == sorted(
        [(e, "first", "pending", None) for e in ids] + [(e, "second", "pending", "first") for e in ids])
    assert outbox == {"completed": 5, "processing": 0} and marks == {"first": 0, "second": 0}
    assert journal.runs == []


async def test_an_event_a_handler_has_nothing_to_do_for_only_advances_its_watermark(
        store_url: str, store_config: StoreConfig) -> None:
    """``first`` keeps steps: three sleep events never reach it, yet its watermark covers them (advanced by the
    dispatcher); ``second`` depends on ``first`` and runs every event, in memory, without waiting on a row."""
    journal = Journal()
    async with pipeline(store_url, store_config, journal, ManualClock()) as (store, service):
        sleep = await enqueue(store, 3, metric="sleep_stage")
        steps = await enqueue(store, 2, metric="steps")
        await until(lambda: journal.done("second") == set(sleep + steps))
        with trio.fail_after(10):
            while (result := await rows(store, store_url, store_config))[1]["completed"] < 5:  # noqa: ASYNC110  (polling the store)
                await trio.sleep(0.01)
        completed = service.gates["first"].completed
    checkpoints, outbox, marks = result
    assert journal.done("first") == set(steps)  # never handed a sleep event
    assert checkpoints == [] and outbox == {"completed": 5, "processing": 0}
    assert marks == {"first": 5, "second": 5} and completed == 5


async def test_a_skip_whose_user_a_unit_of_work_holds_waits_for_it_and_is_not_handed_to_the_worker(
        store_url: str, store_config: StoreConfig, store_backend: str) -> None:
    if store_backend != "postgres":
        pytest.skip("the (user, handler) lock is PostgreSQL's advisory lock; SQLite's single writer serializes")
    journal = Journal()
    async with pipeline(store_url, store_config, journal, ManualClock()) as (store, _):
        async with store.transaction() as holder:  # a unit of work of ``first`` for alice, taking its time
            await holder.checkpoints.lock_user("alice", "first")
            (event,) = await enqueue(store, 1, metric="sleep_stage")
            await until(lambda: journal.done("second") == {event})
            await trio.sleep(0.3)  # several flushes: each finds the lock taken
            assert (await rows(store, store_url, store_config))[2]["first"] == 0
            await holder.commit()
        with trio.fail_after(10):
            while (result := await rows(store, store_url, store_config))[2]["first"] < 1:  # noqa: ASYNC110  (polling the store)
                await trio.sleep(0.01)
    assert journal.done("first") == set() and result[0] == []


async def test_a_flush_that_fails_is_owed_again_and_written_by_the_next(
        store_url: str, store_config: StoreConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    """The flusher's transaction fails once (the database refuses it): the dispatcher keeps what it owed, and a
    later flush writes the skips' watermark advances and the completions all the same."""
    from actors.projection import _dispatcher
    from storage import StoreUnavailable

    failures: list[int] = []
    real = _dispatcher.owed_ops

    def flaky(*args: Any, **kwargs: Any) -> list[Any]:
        if not failures:
            failures.append(1)
            raise StoreUnavailable("the database went away for a moment")
        return real(*args, **kwargs)

    monkeypatch.setattr(_dispatcher, "owed_ops", flaky)
    journal = Journal()
    async with pipeline(store_url, store_config, journal, ManualClock()) as (store, _):
        sleep = await enqueue(store, 2, metric="sleep_stage")
        await until(lambda: journal.done("second") == set(sleep))
        with trio.fail_after(10):
            while (result := await rows(store, store_url, store_config))[1]["completed"] < 2:  # noqa: ASYNC110  (polling the store)
                await trio.sleep(0.01)
    assert failures == [1]
    assert result[2] == {"first": 2, "second": 2} and result[0] == []
