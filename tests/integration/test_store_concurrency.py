"""Concurrency, notification, cancellation and connection-loss behaviour (both backends)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio
import trio.testing

from storage import SampleIn, Store, StoreConfig, StoreUnavailable, open_store
from storage._sql import execute, fetchval
from storage._tx import Op

USER = "user-1"
T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


def sample(i: int) -> SampleIn:
    start = T0 + timedelta(seconds=i)
    return SampleIn("watch", f"r{i}", "heart_rate", 60.0, "bpm", start, start)


async def test_concurrent_claimers_never_claim_the_same_event(store: Store) -> None:
    async with store.transaction() as tx:
        tx.defer(*(tx.outbox.enqueue(USER, "e", {"i": i}) for i in range(120)))
    claims: dict[str, list[int]] = {}

    async def claimer(name: str) -> None:
        claims[name] = []
        while True:
            async with store.transaction() as tx:
                batch = await tx.outbox.claim(name, limit=5)
                # Hold the row locks a moment so claimers really overlap (PostgreSQL).
                await trio.sleep(0.002)
            if not batch:
                return
            claims[name] += [e.id for e in batch]
            async with store.transaction() as tx:
                tx.defer(*(tx.outbox.complete(e.id, name) for e in batch))

    async with trio.open_nursery() as nursery:
        for n in range(4):
            nursery.start_soon(claimer, f"claimer-{n}")
    everything = [i for ids in claims.values() for i in ids]
    assert len(everything) == len(set(everything)) == 120
    async with store.transaction(readonly=True) as tx:
        assert (await tx.outbox.stats()).completed == 120


async def test_concurrent_writers_all_commit(store: Store) -> None:
    async def writer(w: int) -> None:
        for k in range(10):
            async with store.transaction() as tx:
                base = (w * 10 + k) * 5
                tx.defer(
                    tx.samples.upsert_many(USER, [sample(base + j) for j in range(5)]),
                    tx.watermarks.bump(USER),
                )

    async with trio.open_nursery() as nursery:
        for w in range(8):
            nursery.start_soon(writer, w)
    async with store.transaction(readonly=True) as tx:
        marks, page = await tx.run(tx.watermarks.get(USER), tx.samples.query(USER, limit=1000))
    assert marks.watermark == 80 and len(page.items) == 400


async def test_outbox_notifications_arrive_after_commit_only(store: Store) -> None:
    async with store.outbox_notifications() as heard:
        with pytest.raises(RuntimeError):
            async with store.transaction() as tx:
                await tx.outbox.enqueue(USER, "e", {"rolled": "back"})
                raise RuntimeError
        async with store.transaction() as tx:
            event = await tx.outbox.enqueue(USER, "e", {"n": 1})
            with trio.move_on_after(0.2):
                assert await heard.receive() is None, "notified before COMMIT"
            again = await tx.outbox.enqueue(USER, "e", {"n": 2}, dedupe_key="k")
            await tx.outbox.enqueue(USER, "e", {"n": 3}, dedupe_key="k")  # a duplicate key: no notification
            await tx.outbox.enqueue(USER, "e", {"n": 1})  # duplicate content: no notification either
        with trio.fail_after(5):
            assert await heard.receive() == event.id
            assert await heard.receive() == again.id
        with trio.move_on_after(0.2):
            assert await heard.receive() is None, "notified for a duplicate"


async def test_device_lock_serializes_per_device(store: Store) -> None:
    inside: dict[str, int] = {"phone": 0, "tablet": 0}
    overlap: list[str] = []
    log: list[str] = []

    async def push(device: str, n: int) -> None:
        async with store.device_lock(USER, device):
            inside[device] += 1
            if inside[device] > 1:
                overlap.append(device)
            log.append(f"{device}:{n}")
            await trio.sleep(0.02)
            inside[device] -= 1

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for n in range(3):
                nursery.start_soon(push, "phone", n)
                nursery.start_soon(push, "tablet", n)
    assert overlap == [] and len(log) == 6
    # Different devices do not wait for each other: both ran before either finished all.
    assert {entry.split(":")[0] for entry in log[:2]} == {"phone", "tablet"}


async def test_cancelled_unit_of_work_rolls_back_and_frees_the_writer(store: Store) -> None:
    with trio.move_on_after(0.1) as scope:
        async with store.transaction() as tx:
            await tx.samples.upsert_many(USER, [sample(0)])
            await trio.sleep_forever()
    assert scope.cancelled_caught
    with trio.fail_after(5):  # the writer slot / connection came back
        async with store.transaction() as tx:
            await tx.samples.upsert_many(USER, [sample(1)])
    async with store.transaction(readonly=True) as tx:
        page = await tx.samples.query(USER)
    assert [s.source_record_id for s in page.items] == ["r1"]


# --- PostgreSQL only ---------------------------------------------------------------------


async def _terminate(dsn: str, store: Store) -> int:
    """Kill every server session of ``store``'s application name, from a separate admin connection (in the
    store's own schema: the shared database's public schema may be another branch's version)."""
    application_name = store.config.pg_application_name
    config = StoreConfig(pg_application_name="vigil-test-admin", pg_schema=store.config.pg_schema)
    async with open_store(dsn, config=config) as admin:
        async with admin.transaction() as tx:
            return int(
                await Op(
                    tx,
                    fetchval(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                        " WHERE application_name = $1 AND pid <> pg_backend_pid()",
                        application_name,
                    ),
                )
            )


@pytest.fixture
async def pg_store(postgres_dsn: str, postgres_schema: str) -> AsyncIterator[Store]:
    """A PostgreSQL store whose sessions carry a name unique to the test."""
    name = f"vigil-test-{uuid.uuid4().hex[:8]}"
    config = StoreConfig(seed=7, pg_schema=postgres_schema, pg_max_size=4, pg_application_name=name)
    async with open_store(postgres_dsn, config=config) as opened:
        yield opened


@pytest.mark.postgres
async def test_lost_connections_are_replaced_transparently(pg_store: Store, postgres_dsn: str) -> None:
    async with pg_store.transaction() as tx:
        await tx.samples.upsert_many(USER, [sample(0)])
    assert await _terminate(postgres_dsn, pg_store) >= 1
    # The pooled connection is dead; the first crossing fails, is rolled back and retried.
    async with pg_store.transaction() as tx:
        await tx.samples.upsert_many(USER, [sample(1)])
    await pg_store.ping()


@pytest.mark.postgres
async def test_transact_reruns_a_unit_of_work_that_lost_its_connection(
    pg_store: Store, postgres_dsn: str
) -> None:
    runs = 0

    async def work(tx: Any) -> int:
        nonlocal runs
        runs += 1
        await tx.samples.upsert_many(USER, [sample(runs)])
        if runs == 1:
            await _terminate(postgres_dsn, pg_store)
        return int(await tx.watermarks.bump(USER))

    assert await pg_store.transact(work) == 1
    assert runs == 2
    async with pg_store.transaction(readonly=True) as tx:
        page = await tx.samples.query(USER)
    assert [s.source_record_id for s in page.items] == ["r2"]  # the first run left nothing


@pytest.mark.postgres
async def test_a_connection_lost_mid_transaction_is_reported_as_unavailable(
    pg_store: Store, postgres_dsn: str
) -> None:
    with pytest.raises(StoreUnavailable):
        async with pg_store.transaction() as tx:
            await tx.samples.upsert_many(USER, [sample(0)])
            await _terminate(postgres_dsn, pg_store)
            await tx.watermarks.bump(USER)
    async with pg_store.transaction(readonly=True) as tx:
        assert (await tx.samples.query(USER)).items == []


@pytest.mark.postgres
async def test_cancelling_a_running_statement_does_not_leak_connections(pg_store: Store) -> None:
    for _ in range(pg_store.config.pg_max_size + 2):
        with trio.move_on_after(0.05):
            async with pg_store.transaction() as tx:
                await Op(tx, execute("SELECT pg_sleep(5)"))
    with trio.fail_after(5):
        async with pg_store.transaction() as tx:
            assert await tx.watermarks.bump(USER) == 1


@pytest.mark.postgres
async def test_notifications_end_when_the_listening_connection_is_lost(
    pg_store: Store, postgres_dsn: str
) -> None:
    async with pg_store.outbox_notifications() as heard:
        async with pg_store.transaction() as tx:
            event = await tx.outbox.enqueue(USER, "e", {})
        with trio.fail_after(5):
            assert await heard.receive() == event.id
        await _terminate(postgres_dsn, pg_store)
        with trio.fail_after(5), pytest.raises(trio.EndOfChannel):
            await heard.receive()  # the consumer learns it must subscribe again


async def test_urgent_units_of_work_pass_waiting_ones_on_the_single_sqlite_writer(tmp_path: Any) -> None:
    async with open_store(f"sqlite:///{tmp_path / 'urgent.db'}") as store:
        order: list[str] = []
        holding = trio.Event()
        release = trio.Event()

        async def hold() -> None:
            async with store.transaction() as tx:
                await tx.run(tx.users.ensure("holder"))  # the first crossing takes the writer
                holding.set()
                await release.wait()

        async def queued(name: str, urgent: bool) -> None:
            async with store.transaction(urgent=urgent) as tx:
                await tx.run(tx.users.ensure(name))
                order.append(name)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(hold)
            await holding.wait()
            for name, urgent in (("normal-1", False), ("normal-2", False), ("urgent", True)):
                nursery.start_soon(queued, name, urgent)
                await trio.testing.wait_all_tasks_blocked()
            release.set()
        assert order == ["urgent", "normal-1", "normal-2"]
