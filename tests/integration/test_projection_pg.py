"""The projection pipeline shared by several processes on one PostgreSQL (API.md "Processes").

Each "process" here is a whole projection domain with its own store (its own connection pool) and its own
lease owner, in this test process: to PostgreSQL they are as separate as two servers. Real clock (leases are
wall-clock times in the database), short leases, waits bounded by ``fail_after``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest
import trio
import trio_asyncio

from actors.projection import DispatcherConfig, HandlerConfig, ProjectionConfig, ProjectionDomain, UserWork
from kernel import ActorSystem, Supervisor
from storage import Store, StoreConfig, Transaction, open_store

pytestmark = pytest.mark.postgres
DOOMED = Path(__file__).with_name("_doomed_worker.py")


@dataclass
class Journal:
    """Every run of the recording handler: (event ids, owner, start, end) on trio's clock."""

    runs: list[tuple[frozenset[int], str, float, float]] = field(default_factory=list)


class Recording:
    name = "recording"
    depends_on = None

    def __init__(self, journal: Journal, owner: str) -> None:
        self.journal = journal
        self.owner = owner

    def subscribes(self, event_type: str) -> bool:
        return True

    async def project(self, tx: Transaction, work: UserWork) -> None:
        start = trio.current_time()
        await trio.sleep(0.001)  # long enough for a second claimer to try the same rows
        self.journal.runs.append((frozenset(c.event_id for c in work.checkpoints), self.owner, start,
                                  trio.current_time()))


def config(lease: float) -> ProjectionConfig:
    return ProjectionConfig(dispatcher=DispatcherConfig(batch=50, poll_interval=0.05, lease_seconds=lease),
                            handler=HandlerConfig(batch=50, poll_interval=0.05, lease_seconds=lease, timeout=30.0),
                            figures_interval=3600.0)


@asynccontextmanager
async def process(dsn: str, schema: str, journal: Journal, owner: str, lease: float) -> AsyncIterator[Store]:
    async with open_store(dsn, config=StoreConfig(pg_schema=schema, pg_max_size=4)) as store:
        domain = ProjectionDomain(store, config(lease), projections=[Recording(journal, owner)], owner=owner)
        async with ActorSystem.start(Supervisor("root", children=[domain.subtree()])) as system:
            yield store
            await system.stop()


async def enqueue(store: Store, count: int, users: int) -> None:
    marks: dict[str, int] = {}
    for first in range(0, count, 100):
        async with store.transaction() as tx:
            for i in range(first, min(count, first + 100)):
                user = f"user-{i % users}"
                (mark,) = await tx.run(tx.watermarks.bump(user, 1))
                marks[user] = mark
                await tx.run(tx.outbox.enqueue(user, "health.samples.changed",
                                               {"watermark": {"from": mark - 1, "to": mark}, "n": i}))
            await tx.commit()


async def test_two_processes_share_the_work_and_never_run_an_event_at_the_same_time(
        postgres_dsn: str, postgres_schema: str) -> None:
    journal = Journal()
    with trio.fail_after(60):
        await share_the_work(postgres_dsn, postgres_schema, journal)


async def share_the_work(postgres_dsn: str, postgres_schema: str, journal: Journal) -> None:
    async with trio_asyncio.open_loop():
        async with process(postgres_dsn, postgres_schema, journal, "one", 10.0) as store, \
                process(postgres_dsn, postgres_schema, journal, "two", 10.0):
            await enqueue(store, 600, 40)
            with trio.fail_after(30):
                while sum(len(ids) for ids, *_ in journal.runs) < 600:  # noqa: ASYNC110  (polling the journal)
                    await trio.sleep(0.02)
            await trio.sleep(0.3)  # anything processed twice would show up now
            async with store.transaction(readonly=True) as tx:
                (marks,) = await tx.run(tx.watermarks.get("user-0"))
                (projected,) = await tx.commit(tx.watermarks.projected("user-0", "recording"))
    seen: dict[int, list[tuple[str, float, float]]] = {}
    for ids, owner, start, end in journal.runs:
        for event_id in ids:
            seen.setdefault(event_id, []).append((owner, start, end))
    assert len(seen) == 600
    assert all(len(runs) == 1 for runs in seen.values()), {k: v for k, v in seen.items() if len(v) > 1}
    assert {owner for _, owner, _, _ in journal.runs} == {"one", "two"}  # both did work
    assert projected == marks.watermark == 15


async def test_a_killed_processs_leases_are_recovered_within_two_lease_periods(
        postgres_dsn: str, postgres_schema: str) -> None:
    """A real worker process takes the work, hangs mid-unit and is SIGKILLed: nothing of it cleans up, its
    leases stay in the database, and another process completes every event within two lease periods."""
    lease = 1.0
    done = Journal()
    with trio.fail_after(60):
        async with trio_asyncio.open_loop():
            async with open_store(postgres_dsn, config=StoreConfig(pg_schema=postgres_schema)) as store:
                # The doomed process migrates the schema when it opens it; the events go in after it holds work.
                async with trio.open_nursery() as nursery:
                    doomed = await nursery.start(partial(
                        trio.run_process, [sys.executable, str(DOOMED), postgres_dsn, postgres_schema, str(lease)],
                        stdout=subprocess.PIPE, check=False))
                    await enqueue(store, 20, 4)
                    assert doomed.stdout is not None
                    line = b""
                    while b"holding" not in line:
                        chunk = await doomed.stdout.receive_some()
                        assert chunk, "the doomed worker exited before it held any work"
                        line += chunk
                    doomed.send_signal(signal.SIGKILL)
                    await doomed.wait()
                killed_at = trio.current_time()
                async with process(postgres_dsn, postgres_schema, done, "heir", lease):
                    while sum(len(ids) for ids, *_ in done.runs) < 20:  # noqa: ASYNC110  (polling the journal)
                        await trio.sleep(0.01)
                    recovered_in = trio.current_time() - killed_at
    # Expired after one lease at most (the heartbeat died with the process), claimed at the next poll.
    assert recovered_in <= 2 * lease + 0.5, recovered_in
    assert len({e for ids, *_ in done.runs for e in ids}) == 20  # every event, by the heir
