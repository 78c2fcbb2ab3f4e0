"""An ingestion lane: one actor per lane (hot, cold, change), each with its own bounded mailbox.

Group commit: the lane takes every request waiting in its mailbox (up to ``max_batch``) and commits
them together in one transaction and one crossing into the store (``tx.script``): each user's
settings, each (user, requestId) claimed — or found completed (replay), claimed with another
payload (mismatch) or still processing elsewhere (409) — and, for the requests it won, samples,
soft deletions, one ``health.samples.changed`` outbox event naming the (metric, local date) keys
touched, the user's watermark bump and the request's stored result. Nothing of a request is ever
visible half done: a concurrent repeat waits on the claim's row lock (PostgreSQL) or on the single
writer (SQLite) and then finds the request completed. The samples arrive judged and store-checked
(decoded and prepared before they queue), so the lane's own work per request is small. A sample whose
identity is deleted (deletions are final, and may come first: see storage's samples) is refused by the
store alone and answered in ``rejected`` as ``SAMPLE_DELETED``; deleting a sample not there yet leaves a
tombstone, which changes no read model (no event, no watermark).

Locks are taken in phases, the same order in every group: settings, then every claim (sorted by user
and requestId), then every request's samples (by user), then events, watermarks and results. A group
never holds a user's watermark while it still waits for sample rows, so two lanes writing overlapping
samples of one user queue behind each other instead of deadlocking on PostgreSQL.

An upload naming a metric its user blocks must be judged again with that setting, which is only known
inside the transaction: the group then stops after reading settings (nothing claimed), the lane prepares
those uploads again here, between checkpoints, and runs the group anew.

A background lane (cold) waits for its turn (see _priority) before its transaction, so a foreground
request never finds its transaction queued behind a backfill one that began after it.

If a group's transaction fails, nothing of it was written; the requests are retried one at a time,
so one bad request cannot fail its neighbours — unless the database itself is unavailable, when every
request of the group is answered 503 at once. A request whose claim was left "processing" (by a
process of an earlier version, or written by hand) answers 409 until the reaper frees it.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field, replace
from typing import Any

import trio

from kernel import Actor, Failed
from storage import InvalidData, Op, SampleKey, Store, StoreError, StoreUnavailable, Transaction, UserSettings

from ._messages import IngestBatch, IngestOutcome, Lane, LaneReport, LaneStatus, UploadResult
from ._priority import LanePriority
from ._rate import DrainRate
from ._samples import (
    PreparedUpload,
    local_date,
    local_keys,
    prepare_upload,
    preparing_upload,
    refused_samples,
    run_steps_async,
)

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
    outcome: IngestOutcome | Failed | None = None  # once decided
    first: _Pending | None = None  # an earlier message of the same batch with the same request
    upload: PreparedUpload | None = None  # msg.prepared, or prepared again for the user's blocked metrics


@dataclass(frozen=True, slots=True)
class _Unprepared:
    """A group's answer when some uploads must first be prepared for their users' blocked metrics."""

    settings: dict[str, UserSettings]


# Rounds of "prepare again for the settings just read" before the group prepares inside its
# transaction instead (settings that keep changing under it must not starve the request).
_PREPARE_ROUNDS = 3


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
                return self._report()
            case _:
                return (await self.receive_batch([msg]))[0]

    def _report(self) -> LaneReport:
        g = self.gauge
        return LaneReport(lane=g.lane, requests=g.requests, samples=g.samples,
                          transactions=g.transactions, drain_per_second=g.rate.per_second)

    async def receive_batch(self, messages: list[Any]) -> list[Any]:
        began = trio.current_time()
        answers: list[Any] = []
        batches: list[_Pending] = []
        for msg in messages:
            if isinstance(msg, IngestBatch):
                pending = _Pending(msg)
                batches.append(pending)
                answers.append(pending)
            elif isinstance(msg, LaneStatus):
                answers.append(self._report())
            else:
                answers.append(Failed(TypeError(f"ingest lane: unexpected message {msg!r}")))
        if batches:
            try:
                await self._commit(batches)
            except StoreUnavailable as exc:
                # The database, not this lane, is sick: answer 503 (retryable) rather than crash-loop
                # the lane up the tree. Nothing of the group was written.
                for p in batches:
                    if p.outcome is None:
                        p.outcome = Failed(exc)
            self._settle_repeats(batches)
            elapsed = trio.current_time() - began
            g = self.gauge
            g.rate = g.rate.observe(len(batches), elapsed)
            g.requests += len(batches)
        return [a.outcome if isinstance(a, _Pending) else a for a in answers]

    async def _commit(self, batches: list[_Pending]) -> None:
        claimants = await self._prepared(self._claimants(batches))
        if not claimants:
            return
        await self._turn()
        try:
            await self._transact(claimants)
        except StoreUnavailable:
            raise  # every request of the group gets the same 503: no point trying them one by one
        except StoreError as exc:
            if len(claimants) == 1:
                if not isinstance(exc, InvalidData):
                    raise  # not the client's data nor the database's health: let the supervisor see it
                claimants[0].outcome = Failed(exc)
                return
            for one in claimants:  # nothing of the group was written: each on its own
                await self._turn()
                try:
                    await self._transact([one])
                except StoreError as alone:
                    one.outcome = Failed(alone)

    async def _prepared(self, claimants: list[_Pending]) -> list[_Pending]:
        """Prepare (here, between checkpoints) what arrived unprepared — kernel API callers; uploads
        over HTTP come prepared. One the store refuses is answered alone; the rest go on."""
        ready = []
        for p in claimants:
            p.upload = p.msg.prepared
            if p.upload is None:
                try:
                    p.upload = await run_steps_async(preparing_upload(p.msg.samples, self.store))
                except InvalidData as exc:
                    p.outcome = Failed(exc)
                    continue
            ready.append(p)
        return ready

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
        for round_ in range(_PREPARE_ROUNDS + 1):
            inline = round_ == _PREPARE_ROUNDS

            async def work(tx: Transaction, inline: bool = inline) -> list[tuple[IngestOutcome, int]] | _Unprepared:
                (decided,) = await tx.commit(tx.script(lambda: self._group(tx, claimants, inline=inline)))
                return decided

            # transact() reruns the whole unit of work on a transient failure (deadlock, serialization).
            decided = await self.store.transact(work, urgent=self.urgent)
            if isinstance(decided, _Unprepared):
                await self._prepare_for(claimants, decided.settings)
                continue
            g = self.gauge
            g.transactions += 1
            for p, (outcome, stored) in zip(claimants, decided, strict=True):
                p.outcome = outcome
                g.samples += stored
            return

    async def _prepare_for(self, claimants: list[_Pending], settings: dict[str, UserSettings]) -> None:
        """Prepare again, for their users' blocked metrics as just read, the uploads that need it."""
        for p in claimants:
            blocked = settings[p.msg.user_id].blocked_metrics
            if p.upload is None or not p.upload.applies_to(blocked):
                p.upload = await run_steps_async(preparing_upload(p.msg.samples, self.store, blocked_metrics=blocked))

    def _group(self, tx: Transaction, claimants: list[_Pending], *,
               inline: bool) -> Generator[Op[Any], Any, list[tuple[IngestOutcome, int]] | _Unprepared]:
        """The group's unit of work, run on the store's side of one crossing (see ``tx.script``):
        plain computation between the ops, locks in the phases the module docstring gives. Returns
        each claimant's outcome and stored samples, or _Unprepared (nothing claimed) when uploads must
        be prepared again for their users' blocked metrics — unless ``inline``: then it does so here."""
        settings: dict[str, UserSettings] = {}
        for user in sorted({p.msg.user_id for p in claimants}):
            settings[user] = yield tx.users.get_settings(user)
        uploads: list[PreparedUpload] = []
        for p in claimants:
            blocked = settings[p.msg.user_id].blocked_metrics
            upload = p.upload
            assert upload is not None, "claimants are prepared before their transaction"
            if not upload.applies_to(blocked):
                if not inline:
                    return _Unprepared(settings)
                upload = prepare_upload(p.msg.samples, self.store, blocked_metrics=blocked)
            uploads.append(upload)

        decided: list[tuple[IngestOutcome, int]] = [(IngestOutcome(kind="in_progress"), 0)] * len(claimants)
        won: list[int] = []
        for i, p in enumerate(claimants):  # phase: claims
            msg = p.msg
            allowed = settings[msg.user_id].allow_health_data_upload
            if allowed:
                begin = yield tx.ingest.begin(msg.user_id, msg.request_id, msg.payload_hash, lane=msg.lane)
                existing, acquired = begin.request, begin.acquired
            else:
                # Nothing is claimed for a refused upload, but a repeat still answers as one.
                existing, acquired = (yield tx.ingest.get(msg.user_id, msg.request_id)), False
            if acquired:
                won.append(i)
            elif existing is None or (existing.status == "failed" and not allowed):
                decided[i] = (IngestOutcome(kind="upload_disabled"), 0)
            elif existing.payload_hash != msg.payload_hash:
                decided[i] = (IngestOutcome(kind="hash_mismatch",
                                            detail="this requestId was used with a different payload"), 0)
            elif existing.status == "completed":
                decided[i] = (IngestOutcome(kind="replay",
                                            result=UploadResult.from_record(existing.result, replayed=True)), 0)

        written = []
        for i in won:  # phase: samples (claimants are sorted by user)
            msg = claimants[i].msg
            keys = [SampleKey(d.source_id, d.source_record_id, d.start_at) for d in msg.deletions]
            upserted = yield tx.samples.upsert_many(msg.user_id, uploads[i].rows)
            deleted = yield tx.samples.soft_delete_many(msg.user_id, keys)
            written.append((i, upserted, deleted))

        for i, upserted, deleted in written:  # phase: events, watermarks, results
            msg, upload = claimants[i].msg, uploads[i]
            rejected, minutes = upload.rejected, upload.minutes
            if upserted.refused:  # deleted identities stay deleted: those samples are rejected
                refusals, minutes = refused_samples(msg.samples, upload, upserted.refused)
                rejected = tuple(sorted(rejected + refusals, key=lambda r: r.index))
            result = UploadResult(request_id=msg.request_id, inserted=upserted.inserted, updated=upserted.updated,
                                  deleted=deleted.deleted, rejected=rejected)
            # A tombstone (deleting a sample not there yet) changes no read model: not a change.
            changes = upserted.inserted + upserted.updated + deleted.deleted
            if changes:
                timezone = settings[msg.user_id].timezone
                touched = set(local_keys(minutes, timezone))
                touched.update((metric, local_date(at, timezone).isoformat()) for metric, at in deleted.touched)
                # The event names the watermark range (from, to] it covers: a projection that completes it
                # may claim those changes, and only those (events of one user complete out of order).
                mark = yield tx.watermarks.bump(msg.user_id, changes)
                yield tx.outbox.enqueue(
                    msg.user_id,
                    SAMPLES_CHANGED,
                    {"requestId": msg.request_id, "lane": msg.lane, "changes": changes,
                     "watermark": {"from": mark - changes, "to": mark},
                     "keys": [{"metric": m, "date": d} for m, d in sorted(touched)]},
                    dedupe_key=f"ingest:{msg.user_id}:{msg.request_id}",
                    correlation_id=msg.correlation_id,
                )
            yield tx.ingest.complete(msg.user_id, msg.request_id, result.to_record())
            decided[i] = (IngestOutcome(kind="completed", result=result), upserted.total)
        return decided

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
                first_result = first.outcome.result
                assert first_result is not None, "completed and replay outcomes carry their result"
                p.outcome = IngestOutcome(kind="replay", result=replace(first_result, replayed=True))
            else:
                p.outcome = first.outcome
