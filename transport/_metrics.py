"""Prometheus metrics on a per-app registry.

Actor metrics are read from ``system.tree()`` at scrape time by a custom collector, so the kernel's
counters are the only bookkeeping; HTTP latency is the one thing transport measures itself.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import trio
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from actors.ai import AiService
from actors.ingest import IngestService
from actors.maintenance import MaintenanceService
from actors.projection import ProjectionService
from kernel import Breakers, NodeSnapshot
from storage import PoolStats

from ._resilience import BreakerCollector

# Seconds; spans a cache hit to a slow durable batch write.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# A breaker's state as a gauge value (an unknown state reads as open).
BREAKER_GAUGE = {"closed": 0.0, "half_open": 1.0, "open": 2.0}


class _TreeSource(Protocol):
    def tree(self) -> NodeSnapshot: ...


class ActorTreeCollector(Collector):
    """Per-node gauges and counters labelled by actor path, derived from one ``tree()`` per scrape.

    Keyed groups are reported as one series (the group's totals and how many keys are live): a
    series per key would let user ids into the label space.
    """

    def __init__(self, system: _TreeSource) -> None:
        self._system = system

    def describe(self) -> Iterable[Metric]:
        # Without describe(), registering would call collect() and so tree() at app creation.
        return list(self._families().values())

    @staticmethod
    def _families() -> dict[str, Any]:
        return {
            "depth": GaugeMetricFamily("vigil_actor_mailbox_depth", "Messages queued in the mailbox", labels=["path"]),
            "capacity": GaugeMetricFamily("vigil_actor_mailbox_capacity", "Mailbox capacity", labels=["path"]),
            "processed": CounterMetricFamily("vigil_actor_processed", "Messages handled", labels=["path"]),
            "crashes": CounterMetricFamily("vigil_actor_crashes", "Crashes (exceptions escaping receive)",
                                           labels=["path"]),
            "restarts": CounterMetricFamily("vigil_actor_restarts", "Restarts by the supervisor", labels=["path"]),
            "dead": CounterMetricFamily("vigil_actor_dead_letters", "Messages that will never be handled",
                                        labels=["path"]),
            "up": GaugeMetricFamily("vigil_actor_running", "1 if the node is running", labels=["path", "kind"]),
            "live": GaugeMetricFamily("vigil_actor_keyed_live", "Live actors of a keyed group", labels=["path"]),
        }

    def collect(self) -> Iterator[Metric]:
        fam = self._families()
        stack = [self._system.tree()]
        while stack:
            node = stack.pop()
            path, kind = node.path, node.kind
            fam["up"].add_metric([path, kind], 1.0 if node.state == "running" else 0.0)
            fam["restarts"].add_metric([path], float(node.restarts))
            if kind == "supervisor":
                stack.extend(reversed(node.children))
                continue
            fam["crashes"].add_metric([path], float(node.crashes))
            fam["processed"].add_metric([path], float(node.processed))
            fam["dead"].add_metric([path], float(node.dead_letters))
            if node.mailbox is not None:
                fam["depth"].add_metric([path], float(node.mailbox.depth))
                fam["capacity"].add_metric([path], float(node.mailbox.capacity))
            if kind == "keyed":
                # The group's own node already sums its keys (processed includes passivated ones,
                # so it never goes backwards); its children are a truncated sample, not descended.
                fam["live"].add_metric([path], float(node.live if node.live is not None else len(node.children)))
        yield from fam.values()


class LaneCollector(Collector):
    """Per ingestion lane: queue depth and capacity, requests, samples and transactions committed,
    and the drain rate behind 429 hints; the foreground requests in flight and the background units
    that went only because they had waited ``max_wait`` (a steady foreground load starving backfill
    shows there). All of it from ``IngestService``'s figures."""

    def __init__(self, ingest: IngestService) -> None:
        self._ingest = ingest

    def describe(self) -> Iterable[Metric]:
        return [*self._families().values(), *self._priority_families()]

    @staticmethod
    def _families() -> dict[str, Any]:
        return {
            "depth": GaugeMetricFamily("vigil_ingest_lane_depth", "Requests queued in the lane", labels=["lane"]),
            "capacity": GaugeMetricFamily("vigil_ingest_lane_capacity", "Requests the lane holds", labels=["lane"]),
            "requests": CounterMetricFamily("vigil_ingest_lane_requests", "Requests handled", labels=["lane"]),
            "samples": CounterMetricFamily("vigil_ingest_lane_samples", "Samples committed", labels=["lane"]),
            "tx": CounterMetricFamily("vigil_ingest_lane_transactions", "Group commits", labels=["lane"]),
            "rate": GaugeMetricFamily("vigil_ingest_lane_drain_per_second", "Observed drain rate (requests/s)",
                                      labels=["lane"]),
        }

    @staticmethod
    def _priority_families() -> tuple[GaugeMetricFamily, CounterMetricFamily]:
        return (GaugeMetricFamily("vigil_ingest_foreground_in_flight",
                                  "Foreground (hot, change) upload requests in flight"),
                CounterMetricFamily("vigil_ingest_background_starved_turns",
                                    "Background (cold) units that waited max_wait for the foreground to go quiet"))

    def collect(self) -> Iterator[Metric]:
        fam = self._families()
        for lane in self._ingest.lane_stats():
            fam["depth"].add_metric([lane.lane], float(lane.depth))
            fam["capacity"].add_metric([lane.lane], float(lane.capacity))
            fam["requests"].add_metric([lane.lane], float(lane.requests))
            fam["samples"].add_metric([lane.lane], float(lane.samples))
            fam["tx"].add_metric([lane.lane], float(lane.transactions))
            fam["rate"].add_metric([lane.lane], lane.drain_per_second)
        yield from fam.values()
        priority = self._ingest.priority_stats()
        active, starved = self._priority_families()
        active.add_metric([], float(priority.foreground_in_flight))
        starved.add_metric([], float(priority.starved_turns))
        yield active
        yield starved


class ProjectionCollector(Collector):
    """The outbox by status (one vocabulary: pending, processing, completed, dead) and the oldest pending
    event's age; per projection handler its unfinished checkpoints by status and how far behind it is; the
    handlers' breakers in this process (0 closed, 1 half open, 2 open). From ``ProjectionService.figures``,
    refreshed in the background (``vigil_outbox_figures_age_seconds`` says how long ago)."""

    def __init__(self, projection: ProjectionService) -> None:
        self._projection = projection

    def describe(self) -> Iterable[Metric]:
        return list(self._families().values())

    @staticmethod
    def _families() -> dict[str, Any]:
        return {
            "events": GaugeMetricFamily("vigil_outbox_events", "Outbox events by status", labels=["status"]),
            "oldest": GaugeMetricFamily("vigil_outbox_oldest_pending_age_seconds",
                                        "Age of the oldest pending outbox event (0 when none)"),
            "age": GaugeMetricFamily("vigil_outbox_figures_age_seconds", "How old the outbox figures are"),
            "checkpoints": GaugeMetricFamily("vigil_projection_checkpoints",
                                             "Unfinished projection checkpoints by handler and status",
                                             labels=["handler", "status"]),
            "lag_events": GaugeMetricFamily("vigil_projection_lag_events",
                                            "Events a handler has not completed yet", labels=["handler"]),
            "lag_seconds": GaugeMetricFamily("vigil_projection_lag_seconds",
                                             "Age of the oldest event a handler has not completed",
                                             labels=["handler"]),
            "breaker": GaugeMetricFamily("vigil_projection_breaker_state",
                                         "Handler breaker in this process: 0 closed, 1 half open, 2 open",
                                         labels=["handler"]),
        }

    def collect(self) -> Iterator[Metric]:
        fam = self._families()
        figures = self._projection.figures()
        if figures.outbox is not None:
            o = figures.outbox
            for status, count in (("pending", o.pending), ("processing", o.processing),
                                  ("completed", o.completed), ("dead", o.dead)):
                fam["events"].add_metric([status], float(count))
            fam["oldest"].add_metric([], o.oldest_pending_age_seconds or 0.0)
        if figures.age is not None:
            fam["age"].add_metric([], figures.age)
        for lag in figures.lag:
            for status, count in (("pending", lag.pending), ("processing", lag.processing),
                                  ("failed", lag.failed), ("dead", lag.dead)):
                fam["checkpoints"].add_metric([lag.handler, status], float(count))
            fam["lag_events"].add_metric([lag.handler], float(lag.pending + lag.processing + lag.failed))
            fam["lag_seconds"].add_metric([lag.handler], lag.oldest_age_seconds or 0.0)
        for handler, state in figures.breakers.items():
            fam["breaker"].add_metric([handler], BREAKER_GAUGE.get(state, 2.0))
        yield from fam.values()


class AiCollector(Collector):
    """The AI provider in this process: tokens by direction (input, output), calls by outcome (ok,
    rate_limited, server_error, client_error, timeout, connection_error, breaker_open: refused without a
    request), and its breaker (0 closed, 1 half open, 2 open). From ``AiService.state``."""

    def __init__(self, ai: AiService) -> None:
        self._ai = ai

    def describe(self) -> Iterable[Metric]:
        return list(self._families().values())

    @staticmethod
    def _families() -> dict[str, Any]:
        return {
            "tokens": CounterMetricFamily("vigil_ai_tokens", "AI provider tokens by direction",
                                          labels=["direction"]),
            "calls": CounterMetricFamily("vigil_ai_calls", "AI provider calls by outcome", labels=["outcome"]),
            "breaker": GaugeMetricFamily("vigil_ai_breaker_state", "AI provider breaker: 0 closed, 1 half open, "
                                         "2 open"),
        }

    def collect(self) -> Iterator[Metric]:
        fam = self._families()
        state = self._ai.state()
        for direction, count in sorted(state.figures.tokens.items()):
            fam["tokens"].add_metric([direction], float(count))
        for outcome, count in sorted(state.figures.calls.items()):
            fam["calls"].add_metric([outcome], float(count))
        fam["breaker"].add_metric([], BREAKER_GAUGE.get(state.breaker.state, 2.0))
        yield from fam.values()


class ReapedCollector(Collector):
    """``vigil_reaped_total{reaper=...}``: rows each reaper of this process removed or freed (ingest_claims, outbox,
    ingest_results, sync_results, tombstones, checkpoint_leases), from ``MaintenanceService.reaped``."""

    def __init__(self, maintenance: MaintenanceService) -> None:
        self._maintenance = maintenance

    @staticmethod
    def _family() -> CounterMetricFamily:
        return CounterMetricFamily("vigil_reaped", "Rows removed or freed by each reaper", labels=["reaper"])

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for reaper, count in sorted(self._maintenance.reaped().items()):
            family.add_metric([reaper], float(count))
        yield family


class RequestLatency(Collector):
    """``vigil_http_request_duration_seconds``: a histogram by (method, route template, status).

    Every response observes it, so it is kept as plain counts (one list per series, a bisect per
    observation, no locks: only the trio thread touches it) and turned into the histogram family
    at scrape time; prometheus_client's ``Histogram`` takes a lock per sum and bucket update.
    """

    NAME = "vigil_http_request_duration_seconds"
    DOC = "HTTP request latency by route template and status"

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self._bounds = tuple(sorted(buckets))
        # Per series: a count per bucket (the last one past every bound) and the sum of seconds.
        self._series: dict[tuple[str, str, int], tuple[list[int], list[float]]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = ([0] * (len(self._bounds) + 1), [0.0])
        seconds = max(0.0, seconds)
        series[0][bisect_left(self._bounds, seconds)] += 1  # le is inclusive: bisect_left
        series[1][0] += seconds

    @property
    def bounds(self) -> tuple[float, ...]:
        return self._bounds

    def totals(self) -> tuple[dict[str, int], list[int]]:
        """Responses so far by status class, and every series' bucket counts added up (not cumulative;
        the last one past every bound): what the operator page's request rate and p99 are drawn from."""
        classes: dict[str, int] = {}
        merged = [0] * (len(self._bounds) + 1)
        for (_, _, status), (counts, _) in self._series.items():
            label = f"{status // 100}xx"
            classes[label] = classes.get(label, 0) + sum(counts)
            for i, count in enumerate(counts):
                merged[i] += count
        return classes, merged

    def describe(self) -> Iterable[Metric]:
        return [HistogramMetricFamily(self.NAME, self.DOC, labels=["method", "route", "status"])]

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.NAME, self.DOC, labels=["method", "route", "status"])
        for (method, route, status), (counts, total) in sorted(self._series.items()):
            cumulative, buckets = 0, []
            for bound, count in zip(self._bounds, counts, strict=False):
                cumulative += count
                buckets.append((floatToGoString(bound), float(cumulative)))  # type: ignore[no-untyped-call]
            buckets.append(("+Inf", float(cumulative + counts[-1])))
            family.add_metric([method, route, str(status)], buckets, total[0])
        yield family


class ResponseClasses(Collector):
    """``vigil_http_responses_total{status_class}`` (1xx..5xx), the error-rate alerts' series: derived from
    the latency histogram's series at scrape time, so nothing more is counted per request."""

    NAME = "vigil_http_responses"  # exposed as vigil_http_responses_total
    DOC = "HTTP responses by status class (1xx..5xx)"

    def __init__(self, latency: RequestLatency) -> None:
        self._latency = latency

    def describe(self) -> Iterable[Metric]:
        return [CounterMetricFamily(self.NAME, self.DOC, labels=["status_class"])]

    def collect(self) -> Iterator[Metric]:
        responses = CounterMetricFamily(self.NAME, self.DOC, labels=["status_class"])
        classes, _ = self._latency.totals()
        for label in ("1xx", "2xx", "3xx", "4xx", "5xx"):
            responses.add_metric([label], float(classes.get(label, 0)))
        yield responses


@dataclass(frozen=True, slots=True)
class Dependencies:
    """What ``/metrics`` reads of the process's dependencies (``run.py`` fills it in): the store's pool
    (no I/O) and whether Redis answers (probed once per scrape, within ``probe_timeout``). None: not
    used by this process, and not exported (a process without Redis exports no ``vigil_redis_up``)."""

    pool_stats: Callable[[], PoolStats] | None = None
    redis_up: Callable[[], Awaitable[bool]] | None = None
    probe_timeout: float = 1.0


class DependencyCollector(Collector):
    """``vigil_store_pool_connections_{in_use,open,max}`` and ``vigil_redis_up`` (the alerts' series
    for pool use and Redis down). ``probe()`` runs before each scrape; a probe past its timeout is down."""

    def __init__(self, dependencies: Dependencies) -> None:
        self._deps = dependencies
        self._redis_up: float | None = None

    async def probe(self) -> None:
        probe = self._deps.redis_up
        if probe is None:
            return
        up = False
        with trio.move_on_after(self._deps.probe_timeout):
            up = await probe()
        self._redis_up = 1.0 if up else 0.0

    def describe(self) -> Iterable[Metric]:
        return list(self._families().values())

    @staticmethod
    def _families() -> dict[str, Any]:
        return {
            "in_use": GaugeMetricFamily("vigil_store_pool_connections_in_use",
                                        "Database connections held by a unit of work"),
            "open": GaugeMetricFamily("vigil_store_pool_connections_open", "Database connections open (idle or busy)"),
            "max": GaugeMetricFamily("vigil_store_pool_connections_max", "The most connections the pool opens"),
            "redis": GaugeMetricFamily("vigil_redis_up", "1 if Redis answered the last scrape's probe, else 0"),
        }

    def collect(self) -> Iterator[Metric]:
        fam = self._families()
        if self._deps.pool_stats is not None:
            stats = self._deps.pool_stats()
            for name, value in (("in_use", stats.in_use), ("open", stats.open), ("max", stats.max_size)):
                fam[name].add_metric([], float(value))
                yield fam[name]
        if self._deps.redis_up is not None and self._redis_up is not None:
            fam["redis"].add_metric([], self._redis_up)
            yield fam["redis"]


class HttpMetrics:
    """The app's registry, with the request histogram and the actor collector on it."""

    def __init__(self, system: _TreeSource, *, ingest: IngestService | None = None,
                 projection: ProjectionService | None = None, dependencies: Dependencies | None = None,
                 maintenance: MaintenanceService | None = None,
                 breakers: Breakers | None = None, ai: AiService | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.dependencies = DependencyCollector(dependencies or Dependencies())
        self.registry.register(self.dependencies)
        self.request_duration = RequestLatency()
        self.registry.register(self.request_duration)
        self.registry.register(ResponseClasses(self.request_duration))
        self.registry.register(ActorTreeCollector(system))
        if ingest is not None:
            self.registry.register(LaneCollector(ingest))
        if projection is not None:
            self.registry.register(ProjectionCollector(projection))
        if maintenance is not None:
            self.registry.register(ReapedCollector(maintenance))
        if breakers is not None:
            self.registry.register(BreakerCollector(breakers))
        if ai is not None:
            self.registry.register(AiCollector(ai))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.request_duration.observe(method, route, status, seconds)


__all__ = ["ActorTreeCollector", "AiCollector", "Dependencies", "DependencyCollector", "HttpMetrics", "LaneCollector",
           "ProjectionCollector", "ReapedCollector", "RequestLatency", "ResponseClasses"]
