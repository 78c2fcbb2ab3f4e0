"""Deletions are final, whichever lane gets there first (API.md ingestion: a deletion is a tombstone),
through the lanes on both backends (see conftest)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import trio

from actors.ingest import (
    DeletionInput,
    IngestBatch,
    IngestLane,
    IngestOutcome,
    LaneGauge,
    SampleInput,
    UploadResult,
)
from storage import SampleKey, Store

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(i: int) -> datetime:
    return T0 + timedelta(minutes=i)


def upload(request_id: str, records: list[int], lane: Any = "cold") -> IngestBatch:
    samples = tuple(SampleInput(source_id="watch", source_record_id=f"r{i}", metric="heart_rate", value=60.0,
                                unit="bpm", start_at=at(i), end_at=at(i)) for i in records)
    return IngestBatch(user_id="u", request_id=request_id, payload_hash=f"h-{request_id}", lane=lane, samples=samples)


def deletion(request_id: str, records: list[int]) -> IngestBatch:
    dels = tuple(DeletionInput(source_id="watch", source_record_id=f"r{i}", start_at=at(i)) for i in records)
    return IngestBatch(user_id="u", request_id=request_id, payload_hash=f"h-{request_id}", lane="change",
                       deletions=dels)


def lane(name: Any) -> LaneGauge:
    return LaneGauge(lane=name, capacity=8)


def result_of(answer: Any) -> UploadResult:
    assert isinstance(answer, IngestOutcome) and answer.kind == "completed" and answer.result is not None, answer
    return answer.result


async def live_records(store: Store) -> list[str]:
    async with store.transaction(readonly=True) as tx:
        page = await tx.samples.query("u", limit=1000, include_deleted=True)
    return [s.source_record_id for s in page.items if s.deleted_at is None]


async def test_the_deletion_first_rejects_the_late_sample_at_its_request_index(store: Store) -> None:
    change = IngestLane(store=store, gauge=lane("change"))
    cold = IngestLane(store=store, gauge=lane("cold"))
    (first,) = await change.receive_batch([deletion("d1", [5])])
    assert (result_of(first).deleted, result_of(first).rejected) == (0, ())
    # Out of key order, so PostgreSQL's sorted statement must still name the request's index.
    (late,) = await cold.receive_batch([upload("u1", [9, 5, 1])])
    result = result_of(late)
    assert (result.inserted, result.updated) == (2, 0)
    assert [(r.index, r.code) for r in result.rejected] == [(1, "SAMPLE_DELETED")]
    assert cold.gauge.samples == 2  # what was stored
    assert await live_records(store) == ["r1", "r9"]
    async with store.transaction(readonly=True) as tx:
        marks = await tx.watermarks.get("u")
        assert await tx.samples.get("u", SampleKey("watch", "r5", at(5))) is None
    assert marks.watermark == 2  # the tombstone was no change


async def test_a_deletion_racing_its_sample_leaves_it_deleted_either_way(store: Store) -> None:
    """Both lanes at once on one identity: whichever commits first, the sample ends deleted, and the
    answers agree with that order (deleted, or the upload's rejection)."""
    change = IngestLane(store=store, gauge=lane("change"))
    cold = IngestLane(store=store, gauge=lane("cold"))
    for round_ in range(5):
        records = [100 * round_ + i for i in range(50)]
        gone = records[25]
        answers: dict[str, Any] = {}

        async def commit(name: str, on: IngestLane, batch: IngestBatch, into: dict[str, Any] = answers) -> None:
            (into[name],) = await on.receive_batch([batch])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(commit, "up", cold, upload(f"u{round_}", records))
            nursery.start_soon(commit, "del", change, deletion(f"d{round_}", [gone]))
        up, deleted = result_of(answers["up"]), result_of(answers["del"])
        refused = [(r.index, r.code) for r in up.rejected]
        assert (deleted.deleted, refused) in ((1, []), (0, [(25, "SAMPLE_DELETED")])), (deleted, up)
        assert up.inserted == 50 - len(refused)
    assert len(await live_records(store)) == 5 * 49
