"""The ingest domain's wiring and its facade.

    ingest (one_for_one)
     ├── hot      IngestLane (bounded mailbox, reject when full)   foreground
     ├── cold     IngestLane                                         background (see _priority)
     ├── change   IngestLane                                         foreground
     └── reaper   IngestReaper

:class:`IngestDomain` builds the subtree (and the state its actors share with the facade: lane
gauges, lane priority) before the system starts; once it runs, ``domain.service(system)`` gives the
:class:`IngestService`, the one thing the HTTP layer calls: ``accept_upload(user_id, raw)`` takes an
upload from its raw bytes to a committed batch and answers an :class:`UploadResult`, or raises one
of the domain's errors (:mod:`._errors`) or storage's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from actors.maintenance import ReapGuard
from kernel import ActorRef, ActorStopped, ActorSystem, ChildSpec, MailboxFull, Supervisor
from storage import Store, StoreCircuitOpen

from ._decode_pool import DecodePool, DecodePoolBroken
from ._errors import IngestUnavailable, LaneFull, PayloadHashMismatch, RequestInProgress, UploadDisabled
from ._lane import IngestLane, LaneGauge
from ._messages import LANES, IngestBatch, IngestOutcome, Lane, UploadResult
from ._priority import LanePriority, PriorityConfig
from ._rate import retry_after_ms
from ._reaper import IngestReaper
from ._samples import run_steps_async
from ._upload import UploadSamples, decode_upload, decoding_upload, named_lane


@dataclass(frozen=True, slots=True, kw_only=True)
class IngestConfig:
    # Requests (of up to 5,000 samples each) a lane holds before answering 429.
    capacity: dict[str, int] = field(default_factory=lambda: {"hot": 64, "cold": 32, "change": 64})
    # Requests committed together. Cold (backfill: large uploads) commits one at a time, so a foreground
    # request never waits behind more than one backfill upload on a single-writer store (with two,
    # hot p99 under a cold flood reached 2.2x idle in one bench run; throughput was the same).
    max_batch: dict[str, int] = field(default_factory=lambda: {"hot": 32, "cold": 1, "change": 16})
    # Lanes whose CPU and transactions wait for the foreground ones (see _priority).
    background: frozenset[str] = frozenset({"cold"})
    priority: PriorityConfig = field(default_factory=PriorityConfig)
    ask_timeout: float = 30.0
    reap_interval: float = 30.0
    stale_after: float = 120.0


@dataclass(frozen=True, slots=True, kw_only=True)
class LaneStats:
    """One lane, for metrics: its queue (from the lane actor's mailbox) and what it has committed."""

    lane: Lane
    depth: int
    capacity: int
    requests: int
    samples: int
    transactions: int
    drain_per_second: float


@dataclass(frozen=True, slots=True, kw_only=True)
class PriorityStats:
    foreground_in_flight: int  # hot and change uploads being handled now
    starved_turns: int  # background units that went only because they had waited max_wait


class IngestDomain:
    """What the ingest subtree and its facade share, made before the system starts."""

    name = "ingest"

    def __init__(self, store: Store, config: IngestConfig | None = None, *, reap_guard: ReapGuard | None = None) -> None:
        self.store = store
        self.config = config or IngestConfig()
        self.reap_guard = reap_guard
        self.gauges = {lane: LaneGauge(lane=lane, capacity=self.config.capacity[lane]) for lane in LANES}
        self.priority = LanePriority(self.config.priority)

    def subtree(self) -> Supervisor:
        cfg = self.config
        lanes = [
            ChildSpec(lane, IngestLane,
                      kwargs={"store": self.store, "gauge": self.gauges[lane], "max_batch": cfg.max_batch[lane],
                              "urgent": lane == "hot",
                              "priority": self.priority if lane in cfg.background else None},
                      mailbox=cfg.capacity[lane], overflow="reject", shutdown_timeout=30.0)
            for lane in LANES
        ]
        reaper = ChildSpec("reaper", IngestReaper,
                           kwargs={"store": self.store, "interval": cfg.reap_interval, "stale_after": cfg.stale_after,
                                   "guard": self.reap_guard},
                           mailbox=8, overflow="drop_oldest")
        return Supervisor(self.name, strategy="one_for_one", max_restarts=20, within=60.0,
                          base_delay=0.05, max_delay=2.0, children=[*lanes, reaper])

    def service(self, system: ActorSystem, *, under: str = "root",
                decode_pool: DecodePool | None = None) -> IngestService:
        """The facade over this subtree running in ``system`` under the supervisor at ``under``."""
        path = f"{under}/{self.name}"
        return IngestService(lanes={lane: system.ref(f"{path}/{lane}") for lane in LANES}, domain=self,
                             decode_pool=decode_pool)


class IngestService:
    """Uploads in, typed results out; lane figures for metrics."""

    def __init__(self, *, lanes: Mapping[Lane, ActorRef], domain: IngestDomain,
                 decode_pool: DecodePool | None = None) -> None:
        self._lanes = dict(lanes)
        self._gauges = domain.gauges
        self._config = domain.config
        self._priority = domain.priority
        self._preparer = domain.store.preparer
        self._store = domain.store
        self._pool = decode_pool

    # -- uploads --------------------------------------------------------------------------------------
    async def accept_upload(self, user_id: str, raw: bytes, *, correlation_id: str | None = None) -> UploadResult:
        """Decode ``raw`` (an upload document), commit it through its lane, answer what it did.

        A full lane refuses before the body is parsed (under a flood, parsing is most of the CPU).
        Foreground uploads (hot, change) are small and people wait on them: decoded here, at once.
        Backfill is decoded in the decode pool's low-priority workers (here when there is none, one
        at a time), each only in its turn, so it never holds the CPU a foreground upload needs.
        """
        self._refuse_if_store_down()
        lane = named_lane(raw)
        if lane is not None:
            self._refuse_if_full(lane)
        if lane is not None and lane not in self._config.background:
            with self._priority.foreground():
                batch = await run_steps_async(decoding_upload(user_id, raw, self._preparer))
                return await self.submit(replace(batch, correlation_id=correlation_id))
        if self._pool is None:
            async with self._priority.background_cpu():
                batch = await run_steps_async(decoding_upload(user_id, raw, self._preparer))
        else:
            try:
                batch = await self._pool.run(decode_upload, user_id, raw, self._preparer,
                                             wait_turn=self._priority.background_turn)
            except DecodePoolBroken:
                raise IngestUnavailable("decoding this upload failed on the server's side; retry") from None
            batch = replace(batch, samples=UploadSamples(raw))
        return await self.submit(replace(batch, correlation_id=correlation_id))

    async def submit(self, batch: IngestBatch) -> UploadResult:
        """Commit an upload already decoded (``accept_upload`` does that from raw bytes)."""
        self._refuse_if_store_down()
        ref = self._lanes[batch.lane]
        try:
            outcome = await ref.ask(batch, timeout=self._config.ask_timeout)
        except MailboxFull:
            raise self._full(batch.lane) from None
        except ActorStopped as exc:
            raise IngestUnavailable("ingestion is not available right now; retry later") from exc
        if not isinstance(outcome, IngestOutcome):
            raise TypeError(f"the {batch.lane} lane answered {outcome!r}, not an IngestOutcome")
        return _result_of(outcome)

    def _refuse_if_store_down(self) -> None:
        """While the database's breaker is open, refuse at once (503 STORE_UNAVAILABLE with the breaker's
        retry-after) rather than queue uploads that could only fail, or wait, in the lanes."""
        breaker = self._store.breaker
        if breaker is not None:
            wait = breaker.seconds_open()
            if wait > 0:
                raise StoreCircuitOpen(f"the database is unavailable (circuit {breaker.name!r} is open)", wait)

    def _refuse_if_full(self, lane: Lane) -> None:
        if self._lanes[lane].statistics().depth >= self._gauges[lane].capacity:
            raise self._full(lane)

    def _full(self, lane: Lane) -> LaneFull:
        gauge = self._gauges[lane]
        return LaneFull(lane, retry_after_ms(gauge.capacity, gauge.rate))

    # -- figures --------------------------------------------------------------------------------------
    def lane_stats(self) -> tuple[LaneStats, ...]:
        stats = []
        for lane, ref in self._lanes.items():
            g = self._gauges[lane]
            stats.append(LaneStats(lane=lane, depth=ref.statistics().depth, capacity=g.capacity,
                                   requests=g.requests, samples=g.samples, transactions=g.transactions,
                                   drain_per_second=g.rate.per_second))
        return tuple(stats)

    def priority_stats(self) -> PriorityStats:
        return PriorityStats(foreground_in_flight=self._priority.foreground_active,
                             starved_turns=self._priority.starved_turns)


def _result_of(outcome: IngestOutcome) -> UploadResult:
    match outcome.kind:
        case "completed" | "replay":
            assert outcome.result is not None, "completed and replay outcomes carry their result"
            return outcome.result
        case "in_progress":
            raise RequestInProgress()
        case "hash_mismatch":
            raise PayloadHashMismatch(outcome.detail or "this requestId was used with a different payload")
        case "upload_disabled":
            raise UploadDisabled()
    raise AssertionError(f"unhandled ingest outcome {outcome.kind}")


__all__ = ["IngestConfig", "IngestDomain", "IngestService", "LaneStats", "PriorityStats"]
