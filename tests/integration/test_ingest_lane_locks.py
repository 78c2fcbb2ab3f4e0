"""Two lanes committing overlapping samples of one user at once (PostgreSQL: row locks).

A group takes its locks in phases (claims, then samples, then events/watermarks/results), so a lane
that already holds a user's watermark never waits for sample rows another lane holds: the second
lane queues behind the first instead of deadlocking (which PostgreSQL would break after its
``deadlock_timeout``, a second, by failing one transaction).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import trio
import trio_asyncio  # type: ignore[import-untyped]

from actors.ingest import IngestBatch, IngestLane, IngestOutcome, LaneGauge, SampleInput
from storage import Store

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def upload(request_id: str, count: int, lane: Any, first: int = 0) -> IngestBatch:
    samples = tuple(SampleInput(source_id="watch", source_record_id=f"r{i}", metric="heart_rate", value=60.0,
                                unit="bpm", start_at=T0 + timedelta(minutes=i), end_at=T0 + timedelta(minutes=i))
                    for i in range(first, first + count))
    return IngestBatch(user_id="u", request_id=request_id, payload_hash=f"h-{request_id}", lane=lane, samples=samples)


async def deadlocks(store: Store) -> int | None:
    """PostgreSQL's count of deadlocks detected in this database (None on SQLite)."""
    if store.backend != "postgresql":
        return None
    import os

    import asyncpg

    from tests.integration.conftest import DEFAULT_POSTGRES_DSN, POSTGRES_DSN_ENV

    async def read() -> int:
        conn = await asyncpg.connect(os.environ.get(POSTGRES_DSN_ENV, DEFAULT_POSTGRES_DSN))
        try:
            return int(await conn.fetchval(
                "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"))
        finally:
            await conn.close()

    return int(await trio_asyncio.aio_as_trio(read)())


async def test_two_lanes_writing_overlapping_samples_of_one_user_do_not_deadlock(store: Store) -> None:
    before = await deadlocks(store)
    # A: a small upload, then a big one overlapping B's sample; B starts while A writes.
    lane_a = IngestLane(store=store, gauge=LaneGauge(lane="change", capacity=8))
    lane_b = IngestLane(store=store, gauge=LaneGauge(lane="hot", capacity=8), urgent=True)
    answers: dict[str, list[Any]] = {}

    async def commit(name: str, lane: IngestLane, batches: list[IngestBatch], delay: float) -> None:
        await trio.sleep(delay)
        answers[name] = await lane.receive_batch(list(batches))

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(commit, "A", lane_a, [upload("r1", 1, "change", first=20_000),
                                                      upload("r2", 3_000, "change")], 0.0)
            nursery.start_soon(commit, "B", lane_b, [upload("r3", 1, "hot", first=999)], 0.02)
    assert [a.kind for a in answers["A"] if isinstance(a, IngestOutcome)] == ["completed", "completed"]
    assert [a.kind for a in answers["B"] if isinstance(a, IngestOutcome)] == ["completed"]
    # r999 is in both: whichever lane wrote it second updated it.
    inserted = sum(a.result.inserted for a in (*answers["A"], *answers["B"]))
    assert inserted == 3_001
    async with store.transaction(readonly=True) as tx:
        marks = await tx.watermarks.get("u")
    assert marks.watermark == 3_002  # every change counted once: 3,001 inserts and one update
    assert await deadlocks(store) == before
