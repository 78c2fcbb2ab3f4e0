"""An ingestion lane: one actor per lane (hot, cold, change), each with its own bounded mailbox.

Group commit: the lane takes every request waiting in its mailbox (up to ``max_batch``) and commits
them together in one transaction and one crossing into the store (``tx.script``): each user's
settings, each (user, requestId) claimed — or found completed (replay), claimed with another
payload (mismatch) or still processing elsewhere (409) — and, for the requests it won, samples,
soft deletions, one ``health.samples.changed`` outbox event naming the (metric, local date) keys
touched, the user's watermark bump and the request's stored result. Nothing of a request is ever
visible half done: a concurrent repeat waits on the claim's row lock (PostgreSQL) or on the single
writer (SQLite) and then finds the request completed. The samples arrive judged and store-checked
(decoded and prepared before they queue), so the lane's own work per request is small.

A background lane (cold) waits for its turn (see _priority) before its transaction, so a foreground
request never finds its transaction queued behind a backfill one that began after it.

If a group's transaction fails, nothing of it was written; the requests are retried one at a time,
so one bad request cannot fail its neighbours. A request whose claim was left "processing" (by a
process of an earlier version, or written by hand) answers 409 until the reaper frees it.
"""

from __future__ import annotations

from collections.abc import Generator
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
        claimants = self._claimants(batches)
        await self._turn()
        try:
            await self._transact(claimants)
        except StoreError as exc:
            if len(claimants) == 1 and not isinstance(exc, InvalidData | StoreUnavailable):
                raise  # not the client's data nor the database's health: let the supervisor see it
            if len(claimants) == 1:
                claimants[0].outcome = Failed(exc)  # 400 for the client's data, 503 for the database
                return
            for one in claimants:  # nothing of the group was written: each on its own
                await self._turn()
                try:
                    await self._transact([one])
                except StoreError as alone:
                    one.outcome = Failed(alone)

    @staticmethod
    def _claimants(batches: list[_Pending]) -> list[_Pending]:
        """The first message of each (user, requestId), in claim order: one lock order for every
        writer (sorted), so two lanes cannot deadlock on PostgreSQL."""
        seen: dict[tuple[str, str], _Pending] = {}
        for p in batches:
            key = (p.msg.user_id, p.msg.request_id)
            if key in seen:
                p.first = seen[key]
            else:
                seen[key] = p
        return [seen[key] for key in sorted(seen)]

    async def _transact(self, claimants: list[_Pending]) -> None:
        async def work(tx: Any) -> list[tuple[IngestOutcome, int]]:
            (decided,) = await tx.commit(tx.script(lambda: self._group(tx, claimants)))
            return decided  # type: ignore[no-any-return]

        # transact() reruns the whole unit of work on a transient failure (deadlock, serialization).
        decided = await self.store.transact(work, urgent=self.urgent)
        g = self.gauge
        g.transactions += 1
        for p, (outcome, stored) in zip(claimants, decided, strict=True):
            p.outcome = outcome
            g.samples += stored

    def _group(self, tx: Any, claimants: list[_Pending]) -> Generator[Any, Any, list[tuple[IngestOutcome, int]]]:
        """The group's unit of work, run on the store's side of one crossing (see ``tx.script``):
        plain computation between the ops. Returns each claimant's outcome and stored samples."""
        settings: dict[str, Any] = {}
        for user in sorted({p.msg.user_id for p in claimants}):
            settings[user] = yield tx.users.get_settings(user)
        decided: list[tuple[IngestOutcome, int]] = []
        for p in claimants:
            msg = p.msg
            mine = settings[msg.user_id]
            allowed = mine.allow_health_data_upload
            if allowed:
                begin = yield tx.ingest.begin(msg.user_id, msg.request_id, msg.payload_hash, lane=msg.lane)
                existing, acquired = begin.request, begin.acquired
            else:
                # Nothing is claimed for a refused upload, but a repeat still answers as one.
                existing, acquired = (yield tx.ingest.get(msg.user_id, msg.request_id)), False
            if acquired:
                decided.append((yield from self._write(tx, msg, mine)))
            elif existing is None or (existing.status == "failed" and not allowed):
                decided.append((IngestOutcome(kind="upload_disabled"), 0))
            elif existing.payload_hash != msg.payload_hash:
                decided.append((IngestOutcome(kind="hash_mismatch",
                                              detail="this requestId was used with a different payload"), 0))
            elif existing.status == "completed":
                decided.append((IngestOutcome(kind="replay", result=existing.result), 0))
            else:
                decided.append((IngestOutcome(kind="in_progress"), 0))
        return decided

    def _write(self, tx: Any, msg: IngestBatch, settings: Any) -> Generator[Any, Any, tuple[IngestOutcome, int]]:
        """One claimed request's changes, event, watermark and stored result."""
        blocked = settings.blocked_metrics
        upload = msg.prepared
        if upload is None or not upload.applies_to(blocked):
            # Not prepared on the way in, or prepared without this user's blocked metrics.
            upload = prepare_upload(msg.samples, self.store, blocked_metrics=blocked)
        keys = [SampleKey(d.source_id, d.source_record_id, d.start_at) for d in msg.deletions]
        upserted = yield tx.samples.upsert_many(msg.user_id, upload.rows)
        deleted = yield tx.samples.soft_delete_many(msg.user_id, keys)
        result = {
            "requestId": msg.request_id,
            "status": "completed",
            "inserted": upserted.inserted,
            "updated": upserted.updated,
            "deleted": deleted.deleted,
            "rejected": [r.to_dict() for r in upload.rejected],
        }
        changes = upserted.inserted + upserted.updated + deleted.deleted
        if changes:
            timezone = settings.timezone
            touched = set(local_keys(upload.minutes, timezone))
            touched.update((metric, local_date(at, timezone).isoformat()) for metric, at in deleted.touched)
            yield tx.outbox.enqueue(
                msg.user_id,
                SAMPLES_CHANGED,
                {"requestId": msg.request_id, "lane": msg.lane, "changes": changes,
                 "keys": [{"metric": m, "date": d} for m, d in sorted(touched)]},
                dedupe_key=f"ingest:{msg.user_id}:{msg.request_id}",
            )
            yield tx.watermarks.bump(msg.user_id, changes)
        yield tx.ingest.complete(msg.user_id, msg.request_id, result)
        return IngestOutcome(kind="completed", result=result), len(upload.rows)

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
