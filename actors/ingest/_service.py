"""The ingest subtree and the facade the HTTP layer talks to.

    ingest (one_for_one)
     ├── hot      IngestLane (bounded mailbox, reject when full)   foreground
     ├── cold     IngestLane                                         background (see _priority)
     ├── change   IngestLane                                         foreground
     └── reaper   IngestReaper
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kernel import ActorRef, ActorStopped, ActorSystem, ChildSpec, MailboxFull, Supervisor
from storage import Store

from ._lane import IngestLane, LaneGauge
from ._messages import LANES, IngestBatch, IngestOutcome, Lane
from ._priority import LanePriority, PriorityConfig
from ._rate import retry_after_ms
from ._reaper import IngestReaper


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


class LaneFull(Exception):
    def __init__(self, lane: str, retry_after_ms: int) -> None:
        super().__init__(f"the {lane} lane is full")
        self.lane = lane
        self.retry_after_ms = retry_after_ms


class IngestUnavailable(Exception):
    """The lane cannot take requests now (stopping, or restarting after a failure)."""


@dataclass(frozen=True, slots=True)
class IngestService:
    """What transport holds: submit a batch to its lane; lane gauges for metrics and 429 hints."""

    gauges: dict[str, LaneGauge]
    config: IngestConfig
    priority: LanePriority
    store: Store  # the lanes' store; uploads are prepared for it before they queue
    path: str = "root/ingest"

    def subtree(self) -> Supervisor:
        cfg = self.config
        store = self.store
        lanes = [
            ChildSpec(lane, IngestLane,
                      kwargs={"store": store, "gauge": self.gauges[lane], "max_batch": cfg.max_batch[lane],
                              "urgent": lane == "hot",
                              "priority": self.priority if lane in cfg.background else None},
                      mailbox=cfg.capacity[lane], overflow="reject", shutdown_timeout=30.0)
            for lane in LANES
        ]
        reaper = ChildSpec("reaper", IngestReaper,
                           kwargs={"store": store, "interval": cfg.reap_interval, "stale_after": cfg.stale_after},
                           mailbox=8, overflow="drop_oldest")
        return Supervisor(self.path.rsplit("/", 1)[-1], strategy="one_for_one", max_restarts=20, within=60.0,
                          base_delay=0.05, max_delay=2.0, children=[*lanes, reaper])

    def is_background(self, lane: str) -> bool:
        return lane in self.config.background

    def lane_ref(self, system: ActorSystem, lane: Lane) -> ActorRef:
        return system.ref(f"{self.path}/{lane}")

    def refuse_if_full(self, system: ActorSystem, lane: str) -> None:
        """Raise ``LaneFull`` now if ``lane``'s mailbox is full: a request that would be refused
        anyway should not first cost its parsing (under a flood that is most of the CPU)."""
        gauge = self.gauges.get(lane)
        if gauge is None:
            return  # not a lane: validation will say so
        if system.ref(f"{self.path}/{lane}").statistics().depth >= gauge.capacity:
            raise LaneFull(lane, retry_after_ms(gauge.capacity, gauge.rate))

    async def submit(self, system: ActorSystem, batch: IngestBatch) -> IngestOutcome:
        ref = self.lane_ref(system, batch.lane)
        try:
            outcome = await ref.ask(batch, timeout=self.config.ask_timeout)
        except MailboxFull:
            gauge = self.gauges[batch.lane]
            raise LaneFull(batch.lane, retry_after_ms(gauge.capacity, gauge.rate)) from None
        except ActorStopped as exc:
            raise IngestUnavailable(str(exc)) from exc
        assert isinstance(outcome, IngestOutcome)
        return outcome


def ingest_service(store: Store, config: IngestConfig | None = None) -> IngestService:
    config = config or IngestConfig()
    return IngestService(gauges={lane: LaneGauge(lane=lane, capacity=config.capacity[lane]) for lane in LANES},
                         config=config, priority=LanePriority(config.priority), store=store)
