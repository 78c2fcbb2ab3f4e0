"""An ingestion lane: one actor per lane (hot, cold, change), each with its own bounded mailbox.

Group commit: the lane takes every request waiting in its mailbox (up to ``max_batch``) and commits
them together, in two short transactions:

  1. claim — read each user's settings and claim each (user, requestId) as "processing", committed
     on its own so that a concurrent repeat (another lane, another process) sees 409, not a race;
  2. write — samples, soft deletions, one ``health.samples.changed`` outbox event per request naming
     the (metric, local date) keys it touched, the user's watermark bump, and the request's stored
     result, all in one unit of work: committed together or not at all. The samples arrive judged
     and store-checked (IngestService.prepare), so the lane's own work per request is small.

A background lane (cold) waits for its turn (see _priority) before each of the two transactions,
so a foreground request never finds its transaction queued behind a backfill one that began after it.

If the write fails, the claimed requests are marked failed (so a retry may take them over) and the
batch is retried one request at a time, so one bad request cannot fail its neighbours. A process
that dies between the two leaves "processing" rows behind: the reaper frees them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from kernel import Actor, Failed
from storage import InvalidData, SampleKey, Store, StoreError, StoreUnavailable

from ._messages import IngestBatch, IngestOutcome, Lane, LaneReport, LaneStatus
from ._priority import LanePriority
from ._rate import DrainRate
from ._samples import local_date, local_keys, prepare_upload

SAMPLES_CHANGED = "health.samples.changed"


@dataclass(slots=True)
class LaneGauge:
    """Shared with the HTTP layer, which must not queue behind a flood to learn how long it is."""

    lane: Lane
    capacity: int
    rate: DrainRate = field(default_factory=DrainRate)
    requests: int = 0
    samples: int = 0
    transactions: int = 0


@dataclass(slots=True)
class _Pending:
    msg: IngestBatch
    outcome: Any = None  # IngestOutcome or Failed, once decided
    settings: Any = None
    first: _Pending | None = None  # an earlier message of the same batch with the same request


class IngestLane(Actor):
    def __init__(self, *, store: Store, gauge: LaneGauge, max_batch: int = 32, urgent: bool = False,
                 priority: LanePriority | None = None) -> None:
        self.store = store
        self.gauge = gauge
        self.max_batch = max_batch
        # The hot lane's transactions pass waiting cold ones on a single-writer store.
        self.urgent = urgent
        # Set on a background lane: its transactions wait for the foreground lanes' turn to end.
        self.priority = priority

    async def _turn(self) -> None:
        if self.priority is not None:
            await self.priority.background_turn()

    async def receive(self, msg: Any) -> Any:
        match msg:
            case LaneStatus():
                g = self.gauge
                return LaneReport(lane=g.lane, requests=g.requests, samples=g.samples,
                                  transactions=g.transactions, drain_per_second=g.rate.per_second)
            case _:
                return (await self.receive_batch([msg]))[0]

    async def receive_batch(self, messages: list[Any]) -> list[Any]:
        began = trio.current_time()
        pending = [_Pending(msg) for msg in messages]
        batches = [p for p in pending if isinstance(p.msg, IngestBatch)]
        for p in pending:
            if isinstance(p.msg, LaneStatus):
                p.outcome = await self.receive(p.msg)
            elif not isinstance(p.msg, IngestBatch):
                p.outcome = Failed(TypeError(f"ingest lane: unexpected message {p.msg!r}"))
        if batches:
            try:
                await self._commit(batches)
            except StoreUnavailable as exc:
                # The database, not this lane, is sick: answer 503 (retryable) rather than crash-loop
                # the lane up the tree. Claims that could not be released are freed by the reaper.
                for p in batches:
                    if p.outcome is None:
                        p.outcome = Failed(exc)
            self._settle_repeats(batches)
            elapsed = trio.current_time() - began
            g = self.gauge
            g.rate = g.rate.observe(len(batches), elapsed)
            g.requests += len(batches)
        return [p.outcome for p in pending]

    async def _commit(self, batches: list[_Pending]) -> None:
        await self._turn()
        fresh = await self._claim(batches)
        if not fresh:
            return
        await self._turn()
        try:
            await self._write(fresh)
        except StoreError as exc:
            await self._release(fresh, "the write failed" if len(fresh) == 1 else "retrying alone")
            if len(fresh) > 1:
                for one in fresh:
                    await self._write_alone(one)
            elif isinstance(exc, InvalidData | StoreUnavailable):
                # The client's data (400) or the database's health (503): answer it, do not crash.
                fresh[0].outcome = Failed(exc)
            else:
                raise

    async def _claim(self, batches: list[_Pending]) -> list[_Pending]:
        """Transaction 1: settings and claims, one crossing. Returns the requests this lane won."""
        seen: dict[tuple[str, str], _Pending] = {}
        claimants: list[_Pending] = []
        for p in batches:
            key = (p.msg.user_id, p.msg.request_id)
            if key in seen:
                p.first = seen[key]
            else:
                seen[key] = p
                claimants.append(p)
        users = sorted({p.msg.user_id for p in claimants})
        async with self.store.transaction(urgent=self.urgent) as tx:
            ops = [tx.users.get_settings(u) for u in users]
            ops += [tx.ingest.begin(p.msg.user_id, p.msg.request_id, p.msg.payload_hash, lane=p.msg.lane)
                    for p in claimants]
            results = await tx.commit(*ops)
        settings = dict(zip(users, results[: len(users)], strict=True))
        fresh: list[_Pending] = []
        disabled: list[_Pending] = []
        for p, begin in zip(claimants, results[len(users):], strict=True):
            p.settings = settings[p.msg.user_id]
            existing = begin.request
            if begin.acquired:
                if p.settings.allow_health_data_upload:
                    fresh.append(p)
                else:
                    p.outcome = IngestOutcome(kind="upload_disabled")
                    disabled.append(p)
            elif existing.payload_hash != p.msg.payload_hash:
                p.outcome = IngestOutcome(kind="hash_mismatch",
                                          detail="this requestId was used with a different payload")
            elif existing.status == "completed":
                p.outcome = IngestOutcome(kind="replay", result=existing.result)
            else:
                p.outcome = IngestOutcome(kind="in_progress")
        if disabled:
            await self._release(disabled, "health data upload is disabled")
        return fresh

    async def _write(self, fresh: list[_Pending]) -> None:
        """Transaction 2: every fresh request's changes, events, watermarks and results together."""
        prepared = []
        for p in fresh:
            blocked = p.settings.blocked_metrics
            upload = p.msg.prepared
            if upload is None or not upload.applies_to(blocked):
                # Not prepared on the way in, or prepared without this user's blocked metrics.
                upload = prepare_upload(p.msg.samples, self.store, blocked_metrics=blocked)
            keys = [SampleKey(d.source_id, d.source_record_id, d.start_at) for d in p.msg.deletions]
            prepared.append((p, upload, keys))
        # One lock order for every writer (users sorted), so two lanes cannot deadlock on PostgreSQL.
        prepared.sort(key=lambda item: item[0].msg.user_id)

        async def work(tx: Any) -> list[dict[str, Any]]:
            ops: list[Any] = []
            for p, upload, keys in prepared:
                ops.append(tx.samples.upsert_many(p.msg.user_id, upload.rows))
                ops.append(tx.samples.soft_delete_many(p.msg.user_id, keys))
            counts = await tx.run(*ops)
            finals: list[Any] = []
            results: list[dict[str, Any]] = []
            for i, (p, upload, _keys) in enumerate(prepared):
                upserted, deleted = counts[2 * i], counts[2 * i + 1]
                result = {
                    "requestId": p.msg.request_id,
                    "status": "completed",
                    "inserted": upserted.inserted,
                    "updated": upserted.updated,
                    "deleted": deleted.deleted,
                    "rejected": [r.to_dict() for r in upload.rejected],
                }
                results.append(result)
                changes = upserted.inserted + upserted.updated + deleted.deleted
                if changes:
                    timezone = p.settings.timezone
                    keys = set(local_keys(upload.minutes, timezone))
                    keys.update((metric, local_date(at, timezone).isoformat()) for metric, at in deleted.touched)
                    finals.append(tx.outbox.enqueue(
                        p.msg.user_id,
                        SAMPLES_CHANGED,
                        {"requestId": p.msg.request_id, "lane": p.msg.lane, "changes": changes,
                         "keys": [{"metric": m, "date": d} for m, d in sorted(keys)]},
                        dedupe_key=f"ingest:{p.msg.user_id}:{p.msg.request_id}",
                    ))
                    finals.append(tx.watermarks.bump(p.msg.user_id, changes))
                finals.append(tx.ingest.complete(p.msg.user_id, p.msg.request_id, result))
            await tx.commit(*finals)
            return results

        # transact() reruns the whole unit of work on a transient failure (deadlock, serialization).
        results = await self.store.transact(work, urgent=self.urgent)
        g = self.gauge
        g.transactions += 1
        for (p, upload, _), result in zip(prepared, results, strict=True):
            p.outcome = IngestOutcome(kind="completed", result=result)
            g.samples += len(upload.rows)

    async def _write_alone(self, p: _Pending) -> None:
        probe = _Pending(p.msg)
        claimed = await self._claim([probe])
        if not claimed:
            p.outcome = probe.outcome  # what the claim found: replay, mismatch, 409 or 403
            return
        claimed[0].outcome = None
        try:
            await self._write(claimed)
        except StoreError as exc:
            await self._release(claimed, f"write failed: {exc}")
            p.outcome = Failed(exc)
            return
        p.outcome = claimed[0].outcome

    async def _release(self, requests: Sequence[_Pending], why: str) -> None:
        """Mark claimed requests failed, so the client's retry (same hash) may claim them again."""
        async with self.store.transaction(urgent=self.urgent) as tx:
            await tx.commit(*(tx.ingest.fail(p.msg.user_id, p.msg.request_id, why) for p in requests))

    @staticmethod
    def _settle_repeats(batches: list[_Pending]) -> None:
        """A repeat inside one batch answers like a repeat after it: replay or mismatch."""
        for p in batches:
            first = p.first
            if first is None:
                continue
            if first.msg.payload_hash != p.msg.payload_hash:
                p.outcome = IngestOutcome(kind="hash_mismatch", detail="this requestId was used with a different payload")
            elif isinstance(first.outcome, IngestOutcome) and first.outcome.kind in ("completed", "replay"):
                p.outcome = IngestOutcome(kind="replay", result=first.outcome.result)
            else:
                p.outcome = first.outcome
