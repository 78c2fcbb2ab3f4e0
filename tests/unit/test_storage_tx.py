"""The unit-of-work machinery: batching, failure handling, retries with seeded backoff.

A fake backend records crossings instead of touching a database; time is trio's
(``autojump_clock``), so backoff sleeps are exact and instant.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from kernel import POSTGRES, Breakers, retry_delay
from storage import (
    CommitUnknown,
    InvalidData,
    RetryPolicy,
    SampleIn,
    SerializationFailure,
    StoreCircuitOpen,
    StoreConfig,
    StoreError,
    StoreUnavailable,
    open_store,
)
from storage._sql import SQLITE
from storage._store import StoreBase
from storage._transaction import Transaction
from storage._tx import Const, End, Op

POLICY = RetryPolicy(attempts=4, initial=1.0, cap=10.0)


class FakeTransaction(Transaction):
    dialect = SQLITE

    def __init__(self, store: FakeStore, *, readonly: bool, retry_first: bool, urgent: bool) -> None:
        super().__init__(store.config, store._rng, readonly=readonly, retry_first=retry_first, urgent=urgent)
        self.store = store

    async def _cross(self, ops: list[Op[Any]], *, begin: bool, end: End) -> list[Any]:
        self.store.crossings.append(([op.step for op in ops], begin, end))
        await self.store.gate.wait()
        if self.store.failures:
            raise self.store.failures.pop(0)
        return [op.step.value if isinstance(op.step, Const) else "ran" for op in ops]


class FakeStore(StoreBase):
    backend = "sqlite"

    def __init__(self, config: StoreConfig, failures: list[BaseException] | None = None) -> None:
        super().__init__(config)
        self.crossings: list[tuple[list[Any], bool, End]] = []
        self.failures = failures or []
        self.gate = trio.Event()  # crossings wait here: tests close it to hold one in flight
        self.gate.set()

    def _new_transaction(self, *, readonly: bool, retry_first: bool, urgent: bool) -> FakeTransaction:
        return FakeTransaction(self, readonly=readonly, retry_first=retry_first, urgent=urgent)


def expected_delays(seed: int, count: int, policy: RetryPolicy = POLICY) -> list[float]:
    rng = random.Random(seed)
    return [retry_delay(policy, n, rng.random()) for n in range(count)]


async def test_batching_and_deferral() -> None:
    store = FakeStore(StoreConfig(seed=1))
    async with store.transaction() as tx:
        a, _ = await tx.run(tx.watermarks.bump("u"), tx.watermarks.get("u"))
        tx.defer(tx.watermarks.bump("u"))
        (c,) = await tx.commit(tx.users.ensure("u"))
    assert a == "ran" and c is True  # ensure's post-processing turns the row into a bool
    assert [(len(ops), begin, end) for ops, begin, end in store.crossings] == [
        (2, True, None),
        (2, False, "commit"),
    ]


async def test_constant_ops_need_no_crossing() -> None:
    store = FakeStore(StoreConfig())
    async with store.transaction() as tx:
        counts = await tx.samples.upsert_many("u", [])
    assert counts.total == 0 and store.crossings == []


async def test_commit_hooks_run_only_after_commit() -> None:
    store = FakeStore(StoreConfig())
    heard: list[int] = []
    tx = store.transaction()
    tx._notify_outbox = heard.append  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        async with tx:
            tx.defer(Op(tx, Const(7), on_commit=lambda value: heard.append(value)))
            await tx.run(Op(tx, Const(8), on_commit=lambda value: heard.append(value)), tx.users.ensure("u"))
            raise RuntimeError
    assert heard == []
    tx = store.transaction()
    async with tx:
        await tx.run(Op(tx, Const(8), on_commit=heard.append), tx.users.ensure("u"))
        assert heard == []
    assert heard == [8]


async def test_ops_are_checked_when_built_and_run_once() -> None:
    store = FakeStore(StoreConfig())
    async with store.transaction() as tx, store.transaction() as other:
        with pytest.raises(InvalidData):
            tx.watermarks.bump("u", by=-1)
        op = tx.users.ensure("u")
        with pytest.raises(StoreError, match="created it"):
            await other.run(op)
        await op
        with pytest.raises(StoreError, match="only once"):
            await tx.run(op)


async def test_a_forgotten_op_aborts_the_commit() -> None:
    store = FakeStore(StoreConfig())
    with pytest.raises(StoreError, match="never awaited"):
        async with store.transaction() as tx:
            await tx.users.ensure("u")
            tx.watermarks.bump("u")
    assert store.crossings[-1][2] == "rollback"


async def test_a_transaction_is_single_task() -> None:
    store = FakeStore(StoreConfig())
    store.gate = trio.Event()
    async with store.transaction() as tx:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tx.run, tx.users.ensure("u"))
            await trio.testing.wait_all_tasks_blocked()  # the child's crossing is in flight
            with pytest.raises(StoreError, match="two tasks"):
                await tx.users.ensure("v")
            store.gate.set()


async def test_first_crossing_is_retried_with_seeded_backoff(autojump_clock: trio.testing.MockClock) -> None:
    failures: list[BaseException] = [StoreUnavailable("reset"), SerializationFailure("busy")]
    store = FakeStore(StoreConfig(seed=42, retry=POLICY), failures)
    start = trio.current_time()
    async with store.transaction() as tx:
        await tx.commit(tx.users.ensure("u"))
    assert trio.current_time() - start == pytest.approx(sum(expected_delays(42, 2)))
    assert len(store.crossings) == 3 and all(begin for _, begin, _ in store.crossings)


async def test_later_crossings_are_not_retried(autojump_clock: trio.testing.MockClock) -> None:
    store = FakeStore(StoreConfig(seed=1, retry=POLICY))
    with pytest.raises(StoreUnavailable):
        async with store.transaction() as tx:
            await tx.users.ensure("u")
            store.failures.append(StoreUnavailable("lost"))
            await tx.users.ensure("v")
    assert len(store.crossings) == 2


async def test_transact_reruns_the_unit_of_work(autojump_clock: trio.testing.MockClock) -> None:
    store = FakeStore(StoreConfig(seed=7, retry=POLICY))
    runs = 0

    async def work(tx: Any) -> str:
        nonlocal runs
        runs += 1
        await tx.users.ensure("u")
        if runs < 3:
            raise SerializationFailure("could not serialize access")
        return "done"

    start = trio.current_time()
    assert await store.transact(work) == "done"
    assert runs == 3
    assert trio.current_time() - start == pytest.approx(sum(expected_delays(7, 2)))


async def test_transact_gives_up_after_the_policy(autojump_clock: trio.testing.MockClock) -> None:
    store = FakeStore(StoreConfig(seed=7))
    runs = 0

    async def work(tx: Any) -> None:
        nonlocal runs
        runs += 1
        raise StoreUnavailable("down")

    start = trio.current_time()
    with pytest.raises(StoreUnavailable):
        await store.transact(work, retry=POLICY)
    assert runs == POLICY.attempts
    assert trio.current_time() - start == pytest.approx(sum(expected_delays(7, POLICY.attempts - 1)))


@pytest.mark.parametrize(
    "error", [CommitUnknown("?"), InvalidData("x", "bad"), StoreError("other"), KeyError("bug")]
)
async def test_transact_does_not_retry_the_rest(error: BaseException) -> None:
    store = FakeStore(StoreConfig())
    runs = 0

    async def work(tx: Any) -> None:
        nonlocal runs
        runs += 1
        raise error

    with pytest.raises(type(error)):
        await store.transact(work)
    assert runs == 1


async def test_backoff_is_deterministic_per_seed() -> None:
    assert expected_delays(3, 5) == expected_delays(3, 5)
    assert expected_delays(3, 5) != expected_delays(4, 5)
    delays = expected_delays(3, 5)
    assert all(0 <= d <= c for d, c in zip(delays, [1, 2, 4, 8, 10], strict=True))  # full jitter, capped


async def test_a_breaker_refusal_is_never_retried_and_retries_are_counted(
        autojump_clock: trio.testing.MockClock) -> None:
    breakers = Breakers(seed=1)
    store = FakeStore(StoreConfig(seed=7, retry=POLICY), [StoreUnavailable("reset")])
    store.dependency = breakers[POSTGRES]
    runs = 0

    async def work(tx: Any) -> None:
        nonlocal runs
        runs += 1
        if runs == 2:
            raise StoreCircuitOpen("open", retry_after=12.0)
        await tx.users.ensure("u")

    start = trio.current_time()
    with pytest.raises(StoreCircuitOpen):
        await store.transact(work)
    assert runs == 2 and breakers[POSTGRES].retries == 1  # the reset was retried once, the refusal not
    assert trio.current_time() - start == pytest.approx(expected_delays(7, 1)[0])


async def test_sqlite_memory_store_round_trip() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    async with open_store("sqlite:///:memory:") as store:
        async with store.transaction() as tx:
            counts = await tx.samples.upsert_many(
                "u", [SampleIn("s", "r", "steps", 3, "count", start, start)]
            )
        async with store.transaction(readonly=True) as tx:  # :memory: reads on the writer
            page = await tx.samples.query("u")
    assert counts.inserted == 1 and page.items[0].value == 3.0


async def test_readonly_is_enforced_on_a_memory_database() -> None:
    async with open_store("sqlite:///:memory:") as store:
        with pytest.raises(StoreError, match="readonly"):
            async with store.transaction(readonly=True) as tx:
                await tx.watermarks.bump("u")
        async with store.transaction() as tx:  # the shared connection writes again afterwards
            assert await tx.watermarks.bump("u") == 1


async def test_a_store_that_cannot_open_says_why(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreError):
        await open_store(f"sqlite:///{tmp_path / 'dir.db'}")
