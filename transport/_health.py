"""Pluggable health checks for ``GET /health``.

A check is an async callable returning a ``CheckResult`` (or a bool). Each runs under its own
timeout; one that raises or hangs reports ``down`` instead of breaking the probe. Overall status:
a critical check ``down`` → unhealthy (503); any other check not ``ok`` → degraded (200).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import trio

from kernel import NodeSnapshot

CheckStatus = Literal["ok", "degraded", "down"]
OverallStatus = Literal["healthy", "degraded", "unhealthy"]


@dataclass(frozen=True, slots=True)
class CheckResult:
    status: CheckStatus
    detail: str | None = None

    def __post_init__(self) -> None:
        if self.status not in ("ok", "degraded", "down"):
            raise ValueError(f"a check status is ok, degraded or down; got {self.status!r}")


CheckFn = Callable[[], Awaitable["CheckResult | bool"]]
# {breaker name: {"state": closed|open|half_open, ...counts}}; a bare state string is read as {"state": it}.
BreakerSource = Callable[[], Mapping[str, "Mapping[str, Any] | str"]]


@dataclass(frozen=True, slots=True)
class _Check:
    fn: CheckFn
    critical: bool


@dataclass(frozen=True, slots=True)
class HealthReport:
    status: OverallStatus
    checks: dict[str, dict[str, Any]]
    circuit_breakers: dict[str, dict[str, Any]]

    @property
    def http_status(self) -> int:
        return 503 if self.status == "unhealthy" else 200

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "checks": self.checks, "circuitBreakers": self.circuit_breakers}


class HealthRegistry:
    """Checks and breaker-state sources, registered by whoever owns the dependency."""

    def __init__(self) -> None:
        self._checks: dict[str, _Check] = {}
        self._breakers: list[BreakerSource] = []

    def add_check(self, name: str, fn: CheckFn, *, critical: bool = True) -> None:
        if name in self._checks:
            raise ValueError(f"a health check named {name!r} is already registered")
        self._checks[name] = _Check(fn, critical)

    def add_breakers(self, source: BreakerSource) -> None:
        """``source()`` returns ``{breaker name: {"state": closed|open|half_open, ...counts}}``."""
        self._breakers.append(source)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._checks)

    async def run(self, per_check_timeout: float) -> HealthReport:
        results: dict[str, dict[str, Any]] = {}

        async def one(name: str, check: _Check) -> None:
            started = trio.current_time()
            result = CheckResult("down", "timed out")
            with trio.move_on_after(per_check_timeout):
                try:
                    raw = await check.fn()
                    result = raw if isinstance(raw, CheckResult) else CheckResult("ok" if raw else "down")
                except Exception as exc:  # a failing probe is a finding, not a crash of /health
                    result = CheckResult("down", f"{type(exc).__name__}: {exc}")
            results[name] = {"status": result.status, "critical": check.critical, "detail": result.detail,
                             "durationMs": round((trio.current_time() - started) * 1000, 3)}

        async with trio.open_nursery() as nursery:
            for name, check in self._checks.items():
                nursery.start_soon(one, name, check)

        breakers: dict[str, dict[str, Any]] = {}
        for source in self._breakers:
            try:
                breakers.update({name: {"state": value} if isinstance(value, str) else dict(value)
                                 for name, value in source().items()})
            except Exception as exc:
                breakers[f"<{type(exc).__name__}>"] = {"state": "unknown"}

        status: OverallStatus = "healthy"
        for name in self._checks:  # registration order, for a stable document
            r = results[name]
            if r["status"] == "down" and r["critical"]:
                status = "unhealthy"
            elif r["status"] != "ok" and status == "healthy":
                status = "degraded"
        if status == "healthy" and any(b.get("state") != "closed" for b in breakers.values()):
            status = "degraded"
        return HealthReport(status, {n: results[n] for n in self._checks}, breakers)


class _TreeSource(Protocol):
    def tree(self) -> NodeSnapshot: ...


def actor_system_check(system: _TreeSource) -> CheckFn:
    """The root supervisor is running: ``down`` once it stopped or failed, ``degraded`` mid-restart."""

    async def check() -> CheckResult:
        state = system.tree().state
        if state == "running":
            return CheckResult("ok")
        if state in ("starting", "restarting"):
            return CheckResult("degraded", f"root is {state}")
        return CheckResult("down", f"root is {state}")

    return check


def draining_check(draining: trio.Event) -> CheckFn:
    """Unhealthy while shutting down, so load balancers stop routing here before the socket closes."""

    async def check() -> CheckResult:
        return CheckResult("down", "shutting down") if draining.is_set() else CheckResult("ok")

    return check


__all__ = ["CheckFn", "CheckResult", "HealthRegistry", "HealthReport", "actor_system_check", "draining_check"]
