"""The dependencies' breakers as operators see them: ``/health``'s ``circuitBreakers`` and ``/metrics``.

    vigil_circuit_breaker_state{breaker}             0 closed, 1 open, 2 half_open
    vigil_circuit_breaker_failures_total{breaker}    calls that failed (errors, and calls past the call timeout)
    vigil_circuit_breaker_rejections_total{breaker}  calls an open breaker refused
    vigil_retry_attempts_total{dependency}           retries (attempts after the first) of the one retry helper
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kernel import Breakers, BreakerSnapshot
from storage import Store, StoreError
from storage.coordination import Coordination

from ._health import CheckFn, CheckResult

STATE_VALUE = {"closed": 0.0, "open": 1.0, "half_open": 2.0}


def store_check(store: Store) -> CheckFn:
    """``/health``'s database check: a ping through the database's breaker (refused at once while it is
    open, so the check reports ``down`` fast; a probe when half open)."""

    async def check() -> CheckResult:
        try:
            await store.ping()
        except StoreError as exc:
            return CheckResult("down", str(exc))
        return CheckResult("ok", store.backend)

    return check


def coordination_check(coordination: Coordination) -> CheckFn:
    """``/health``'s Redis check (register it non-critical: without Redis the service is degraded, not down)."""

    async def check() -> CheckResult:
        status = await coordination.health()
        return CheckResult("ok" if status.ok else "down", f"{status.backend}: {status.detail}")

    return check


def breaker_to_dict(snapshot: BreakerSnapshot, retries: int) -> dict[str, Any]:
    """One breaker in ``/health``: its state and counts (totals since start, and the current window)."""
    return {
        "state": snapshot.state,
        "requests": snapshot.requests,
        "successes": snapshot.successes,
        "failures": snapshot.failures_total,
        "rejects": snapshot.rejected,
        "consecutiveFailures": snapshot.consecutive_failures,
        "windowCalls": snapshot.calls,
        "windowFailures": snapshot.failures,
        "retryAfterMs": round(snapshot.retry_after * 1000),
        "retries": retries,
    }


def breakers_health(breakers: Breakers) -> Any:
    """A ``HealthRegistry.add_breakers`` source over the registry."""

    def source() -> dict[str, dict[str, Any]]:
        return {dep.name: breaker_to_dict(dep.breaker.snapshot(), dep.retries) for dep in breakers}

    return source


class BreakerCollector(Collector):
    def __init__(self, breakers: Breakers) -> None:
        self._breakers = breakers

    def describe(self) -> Iterable[Metric]:
        return self._families()

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, CounterMetricFamily, CounterMetricFamily, CounterMetricFamily]:
        return (
            GaugeMetricFamily("vigil_circuit_breaker_state", "Breaker state: 0 closed, 1 open, 2 half open",
                              labels=["breaker"]),
            CounterMetricFamily("vigil_circuit_breaker_failures", "Calls that failed or passed the call timeout",
                                labels=["breaker"]),
            CounterMetricFamily("vigil_circuit_breaker_rejections", "Calls an open breaker refused",
                                labels=["breaker"]),
            CounterMetricFamily("vigil_retry_attempts", "Retries of the one retry helper", labels=["dependency"]),
        )

    def collect(self) -> Iterator[Metric]:
        state, failures, rejections, retries = self._families()
        for dep in self._breakers:
            snap = dep.breaker.snapshot()
            state.add_metric([dep.name], STATE_VALUE[snap.state])
            failures.add_metric([dep.name], float(snap.failures_total))
            rejections.add_metric([dep.name], float(snap.rejected))
            retries.add_metric([dep.name], float(dep.retries))
        yield from (state, failures, rejections, retries)


__all__ = ["BreakerCollector", "breaker_to_dict", "breakers_health", "coordination_check", "store_check"]
