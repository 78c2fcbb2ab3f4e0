"""A projection handler's actor: runs its work, per user, in units of work that commit the read model, the
watermark's advance and (for stored work) the checkpoints' completion together.

Work arrives two ways: the dispatcher hands over fresh events it holds, in memory (``Work(in_memory=True)``: no
checkpoint row exists; the worker reports each one back with ``Handled`` — done, stored or dropped — exactly once),
and the worker claims due checkpoints itself on its tick (retries after their backoff, a crashed process's
expired leases, dependents whose dependency completed, work the dispatcher could not hand over). A batch is one
unit of work for all its users (group commit, as the ingest lanes do); if it fails, each user is tried alone, so
one user's bad data holds back no one else, and a failed in-memory item gets its checkpoint then (attempt 1,
failed, with its backoff). Each user's read model is recomputed from raw samples (``Projection.project``), never
patched with deltas, so a redelivered or reordered event gives the same answer; on PostgreSQL the unit first takes
a transaction-scoped lock per (user, handler), so two processes never interleave a read and a write of the same
read model.

While a unit runs, a heartbeat renews the stored checkpoints' leases (``lease_seconds`` / 3; in-memory work is
leased by its event, which the dispatcher renews), so a short lease is safe and a crashed process's work is
claimed again within about two lease periods. Each unit runs under the handler's timeout and its circuit
breaker: after consecutive failures the breaker opens, the worker stops taking work (the read models show
``stale``), and after ``open_for`` one probe decides.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from kernel import Actor, ActorRef, ActorStopped, BreakerConfig, CircuitBreaker, CircuitOpen, MailboxFull
from storage import CheckpointIn, CheckpointKey, InvalidData, Store, StoreError, Transaction

from ._messages import Handled, Tick, Work
from ._work import EventDigest, Job, UserWork, group_work, split

log = logging.getLogger("vigil.projection")


class Projection(Protocol):
    """What a concrete read model provides; the worker does the leasing, batching, retries and bookkeeping."""

    @property
    def name(self) -> str: ...

    @property
    def depends_on(self) -> str | None:
        """Another handler that must have completed the same event first (or None)."""
        ...

    def subscribes(self, event_type: str) -> bool: ...

    async def project(self, tx: Transaction, work: UserWork) -> None:
        """Bring ``work.user_id``'s read model up to date for ``work`` inside ``tx`` (the worker holds the
        user's lock and commits): read with ``tx.run``, compute, ``tx.defer`` the writes.

        A projection may also define ``async project_many(tx, works)`` for a whole batch: the worker then
        calls it instead, so the reads of hundreds of users cross into the database a few times, not once
        per user (the default projections do).

        And ``concerns(work) -> bool`` (pure; ``work`` is one event's ``event_work``): False when the event
        cannot change this read model (an upload of steps, for sleep nights). The worker then never sees it: the
        dispatcher's flusher advances the handler's watermark over the event; without it, every subscribed event
        is the worker's."""
        ...


class Publishes(Protocol):
    """Where "this user's read model caught up" goes (the realtime hub); see ``_service``."""

    def projection_updated(self, *, user_id: str, handler: str, projected: int, correlation_id: str | None) -> None:
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class HandlerConfig:
    batch: int = 2_000  # checkpoints claimed at once, and the most one unit of work runs (the dispatcher's batch)
    lease_seconds: float = 10.0
    timeout: float = 30.0  # one unit of work (a batch, or one user when retried alone)
    # Due retries and expired leases (fresh work is handed over at once); None: only when asked (process_due).
    poll_interval: float | None = 2.0
    breaker: BreakerConfig = field(default_factory=lambda: BreakerConfig(
        window=30.0, min_calls=1_000_000, failure_rate=1.0, consecutive_failures=5, open_for=30.0,
        half_open_probes=1))

    @property
    def heartbeat(self) -> float:
        return self.lease_seconds / 3


class HandlerGate:
    """The handler's state shared with the dispatcher (which leases new work only to a worker that can take it)."""

    def __init__(self, name: str, config: HandlerConfig,
                 on_transition: Callable[[str, str, str, float], None] | None = None) -> None:
        self.name = name
        self.config = config
        self.breaker = CircuitBreaker(f"projection:{name}", config.breaker, on_transition=on_transition)
        self.completed = 0
        # Checkpoints of this handler wait as 'pending' in the store (the dispatcher could not hand them over,
        # or a claim came back full): the worker claims again as soon as it is free, not at its next poll.
        self.backlog = False

    @property
    def taking_work(self) -> bool:
        # half_open takes work too: the breaker admits the probe(s), and only a probe can close it again.
        return self.breaker.snapshot().state != "open"


class _Failed(Exception):
    """A unit of work that failed; ``retryable`` says whether its checkpoints may run again."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class ProjectionWorker(Actor):
    max_batch = 64

    def __init__(self, *, store: Store, projection: Projection, gate: HandlerGate, owner: str,
                 publisher: Publishes | None = None, lock_users: bool = True, dependents: Sequence[str] = (),
                 dispatcher: str | None = None) -> None:
        """``dispatcher``: the dispatcher's name beside this worker's supervisor, told what became of in-memory
        work (None: no dispatcher hands this worker in-memory work)."""
        self.store = store
        self.projection = projection
        self.gate = gate
        self.config = gate.config
        self.owner = owner
        self.publisher = publisher
        self.lock_users = lock_users
        # Sibling workers whose handlers depend on this one: told to claim as soon as a unit completes (their
        # checkpoints of those events just became claimable), not at their next poll.
        self.dependents = tuple(dependents)
        self._dependents: list[ActorRef] = []
        self.dispatcher = dispatcher
        self._dispatcher: ActorRef | None = None
        self._unreported: set[int] = set()
        # Never past the store's batch limit (a smaller ``max_batch_rows`` than ``batch`` caps claims and units).
        self._batch = min(self.config.batch, store.config.limits.max_batch_rows)

    async def started(self) -> None:
        here = self.path.rsplit("/", 1)[0]
        self._dependents = [self.system.ref(f"{here}/{name}") for name in self.dependents]
        if self.dispatcher is not None:
            self._dispatcher = self.system.ref(f"{here.rsplit('/', 1)[0]}/{self.dispatcher}")
        if self.config.poll_interval is not None:
            self.every(self.config.poll_interval, Tick())
        self.send_after(0.0, Tick())  # what a previous incarnation or process left due

    async def receive_batch(self, messages: list[Any]) -> list[Any]:
        handed: list[_Item] = []
        in_memory: set[CheckpointKey] = set()
        claim = False
        answers: list[Any] = []
        for msg in messages:
            match msg:
                case Work(items=items, in_memory=memory):
                    handed.extend(items)
                    if memory:
                        in_memory.update(CheckpointKey(c.event_id, c.handler) for c, _ in items)
                    answers.append(None)
                case Tick():
                    claim = True
                    answers.append(None)
                case _:
                    answers.append(None)
                    log.error("projection worker %s: unexpected message %r", self.projection.name, msg)
        # Every in-memory item is reported to the dispatcher exactly once, whatever happens here: it holds the
        # event until then. Whatever an escaping error leaves unreported is dropped (redelivered on its lease).
        self._unreported = {key.event_id for key in in_memory}
        try:
            await self._process(handed, in_memory, claim)
        except Exception:
            with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                await self._report(dropped=sorted(self._unreported))
            raise
        return answers

    async def _process(self, handed: list[_Item], in_memory: set[CheckpointKey], claim: bool) -> None:
        if handed and not self.gate.taking_work:
            # The breaker opened after the dispatcher handed these over: back to the store, unattempted.
            await self._release([c for c, _ in handed], in_memory)
            handed = []
        if (claim or self.gate.backlog) and self.gate.taking_work:
            self.gate.backlog = False
            claimed = await self._claim()
            if len(claimed) >= self._batch:
                self.gate.backlog = True  # more may be due
                self.send_after(0.0, Tick())
            handed.extend(claimed)
        # Units of at most ``batch`` checkpoints: a unit's statements grow with it, and a heartbeat renews
        # only what one unit holds.
        size = self._batch
        for first in range(0, len(handed), size):
            await self._run(handed[first:first + size], in_memory)

    # -- getting work ----------------------------------------------------------------------------------
    async def _claim(self) -> list[_Item]:
        async with self.store.transaction() as tx:
            (claimed,) = await tx.commit(tx.checkpoints.claim(self.projection.name, self.owner,
                                                              limit=self._batch,
                                                              lease_seconds=self.config.lease_seconds))
        return [(c, None) for c in claimed]

    async def _release(self, jobs: Sequence[Job], in_memory: set[CheckpointKey]) -> None:
        """Hand work back: stored checkpoints to pending, in-memory work stored as pending checkpoints."""
        stored = [CheckpointKey(c.event_id, c.handler) for c in jobs if _key(c) not in in_memory]
        fresh = [_row(c) for c in jobs if _key(c) in in_memory]
        try:
            async with self.store.transaction() as tx:
                await tx.commit(*([tx.checkpoints.release(self.owner, stored)] if stored else []),
                                *([tx.checkpoints.create_many(fresh)] if fresh else []))
        except StoreError:
            await self._report(dropped=[c.event_id for c in fresh])
            raise
        await self._report(stored=[c.event_id for c in fresh])

    async def _events(self, handed: Sequence[_Item]) -> dict[int, EventDigest]:
        events = {digest.event_id: digest for _, digest in handed if digest is not None}
        missing = sorted({c.event_id for c, digest in handed if digest is None} - set(events))
        if missing:
            async with self.store.transaction(readonly=True) as tx:
                (found,) = await tx.commit(tx.outbox.get_many(missing))
            for event in found:
                events[event.id] = EventDigest(event_id=event.id, type=event.type, payload=event.payload)
        return events

    async def _report(self, *, done: Sequence[int] = (), stored: Sequence[int] = (),
                      dropped: Sequence[int] = ()) -> None:
        """Tell the dispatcher what became of in-memory work (it holds those events until every handler has)."""
        if not (done or stored or dropped) or self._dispatcher is None:
            return
        self._unreported.difference_update(done, stored, dropped)
        with contextlib.suppress(ActorStopped):  # a dispatcher gone for good: the events' leases decide
            await self._dispatcher.tell(Handled(handler=self.projection.name, done=tuple(done),
                                                stored=tuple(stored), dropped=tuple(dropped)))

    # -- running it ------------------------------------------------------------------------------------
    async def _run(self, handed: list[_Item], in_memory: set[CheckpointKey]) -> None:
        work = group_work((c for c, _ in handed), await self._events(handed))
        try:
            await self._attempt(work, in_memory)
        except _Failed as failure:
            if len(work) == 1:
                await self._fail(work[0], failure, in_memory)
                return
            for alone in split(work):  # nothing of the batch was written: each user on its own
                if not self.gate.taking_work:
                    try:
                        await self._release([c for w in alone for c in w.checkpoints], in_memory)
                    except StoreError as exc:  # leases expire: claimed again later
                        log.warning("projection %s: could not hand back work: %s", self.projection.name, exc)
                    continue
                try:
                    await self._attempt(alone, in_memory)
                except _Failed as failure_alone:
                    await self._fail(alone[0], failure_alone, in_memory)

    async def _attempt(self, work: list[UserWork], in_memory: set[CheckpointKey]) -> None:
        """One unit of work for ``work`` under the breaker, the timeout and a heartbeat."""
        keys = [key for w in work for key in w.keys_of_checkpoints]
        stored = [key for key in keys if key not in in_memory]
        try:
            async with self.gate.breaker.guard():
                projected = await self._with_heartbeat(stored, work)
        except CircuitOpen as exc:
            raise _Failed(f"held back: {exc}", retryable=True) from exc
        except trio.TooSlowError as exc:
            raise _Failed(f"timed out after {self.config.timeout:g} s", retryable=True) from exc
        except InvalidData as exc:
            raise _Failed(f"{type(exc).__name__}: {exc}", retryable=False) from exc
        except StoreError as exc:
            raise _Failed(f"{type(exc).__name__}: {exc}", retryable=True) from exc
        except Exception as exc:  # a bug in the projection: retried with backoff, then dead-lettered
            log.exception("projection %s failed", self.projection.name,
                          extra={"fields": {"handler": self.projection.name, "correlationIds": correlation_ids(work)}})
            raise _Failed(f"{type(exc).__name__}: {exc}", retryable=True) from exc
        self.gate.completed += len(keys)
        await self._report(done=[key.event_id for key in keys if key in in_memory])
        for ref in self._dependents:
            with contextlib.suppress(MailboxFull, ActorStopped):
                ref.tell_nowait(Tick())
        if self.publisher is not None:
            for w in work:
                correlation = next((c.correlation_id for c in w.checkpoints if c.correlation_id), None)
                self.publisher.projection_updated(user_id=w.user_id, handler=self.projection.name,
                                                  projected=projected[w.user_id], correlation_id=correlation)

    async def _with_heartbeat(self, stored: list[CheckpointKey], work: list[UserWork]) -> dict[str, int]:
        """The unit of work, with the stored checkpoints' leases renewed beside it (in-memory work is leased by
        its event, which the dispatcher renews); its own exception comes out as is (not wrapped in an exception
        group), so the caller can tell a timeout from bad data."""
        failure: Exception | None = None
        projected: dict[str, int] = {}
        async with trio.open_nursery() as nursery:
            if stored:
                nursery.start_soon(self._heartbeat, stored, correlation_ids(work))
            try:
                with trio.fail_after(self.config.timeout):
                    projected = await self.store.transact(lambda tx: self._unit(tx, work, stored))
            except Exception as exc:
                failure = exc
            finally:
                nursery.cancel_scope.cancel()
        if failure is not None:
            raise failure
        return projected

    async def _unit(self, tx: Transaction, work: list[UserWork], stored: list[CheckpointKey]) -> dict[str, int]:
        name = self.projection.name
        if self.lock_users:
            # Deferred: taken at the start of the projection's first crossing (before its reads), not in a
            # crossing of its own.
            tx.defer(tx.checkpoints.lock_users([w.user_id for w in work], name))
        many = getattr(self.projection, "project_many", None)
        if many is not None:  # reads for the whole batch in a few crossings
            await many(tx, work)
        else:
            for w in work:
                await self.projection.project(tx, w)
        *_, marks = await tx.commit(*([tx.checkpoints.complete_many(self.owner, stored)] if stored else []),
                                    tx.watermarks.advance_many(name, {w.user_id: w.ranges for w in work}))
        return dict(marks)

    async def _heartbeat(self, keys: list[CheckpointKey], correlations: list[str]) -> None:
        while True:
            await trio.sleep(self.config.heartbeat)
            try:
                async with self.store.transaction() as tx:
                    await tx.commit(tx.checkpoints.renew(self.owner, keys, lease_seconds=self.config.lease_seconds))
            except Exception as exc:  # the unit itself will fail or succeed on its own terms
                log.warning("projection %s: heartbeat failed: %s", self.projection.name, exc,
                            extra={"fields": {"handler": self.projection.name, "correlationIds": correlations}})

    async def _fail(self, work: UserWork, failure: _Failed, in_memory: set[CheckpointKey]) -> None:
        """Record the failure on each checkpoint (retry after its backoff, or dead). In-memory work gets its
        checkpoint here, created as this attempt (the first) and failed in the same transaction."""
        log.warning("projection %s: unit failed for %s: %s", self.projection.name, work.user_id, failure,
                    extra={"fields": {"handler": self.projection.name, "userId": work.user_id,
                                      "retryable": failure.retryable, "correlationIds": correlation_ids([work])}})
        fresh = [_row(c) for c in work.checkpoints if _key(c) in in_memory]
        try:
            async with self.store.transaction() as tx:
                if fresh:
                    await tx.run(tx.checkpoints.create_many(fresh, owner=self.owner,
                                                            lease_seconds=self.config.lease_seconds))
                await tx.commit(*(tx.checkpoints.fail(key, self.owner, str(failure), retryable=failure.retryable)
                                  for key in work.keys_of_checkpoints))
        except StoreError as exc:
            # The leases expire and another claim retries them: nothing is lost, only delayed.
            log.warning("projection %s: could not record a failure for %s: %s", self.projection.name,
                        work.user_id, exc, extra={"fields": {"handler": self.projection.name,
                                                             "correlationIds": correlation_ids([work])}})
            await self._report(dropped=[c.event_id for c in fresh])
            return
        await self._report(stored=[c.event_id for c in fresh])


_Item = tuple[Job, EventDigest | None]


def _key(job: Job) -> CheckpointKey:
    return CheckpointKey(job.event_id, job.handler)


def _row(job: Job) -> CheckpointIn:
    """The checkpoint to store for in-memory work (its dependency, if any, completed already)."""
    return job if isinstance(job, CheckpointIn) else CheckpointIn(
        event_id=job.event_id, handler=job.handler, user_id=job.user_id, event_type=job.event_type,
        wm_from=job.wm_from, wm_to=job.wm_to, correlation_id=job.correlation_id)


def correlation_ids(work: Sequence[UserWork]) -> list[str]:
    """The request ids (API.md ``correlationId``) behind a unit of work, for its log lines."""
    return sorted({c.correlation_id for w in work for c in w.checkpoints if c.correlation_id})


__all__ = ["HandlerConfig", "HandlerGate", "Projection", "ProjectionWorker", "Publishes", "correlation_ids"]
