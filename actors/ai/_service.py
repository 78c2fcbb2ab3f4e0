"""The AI domain's wiring and its facade.

    ai (one_for_one)
     ├── gateway                GatewayKeeper: owns the provider's connection pool (closed on stop)
     └── reports (keyed by user) WeeklyReporter: a user's weekly report, cached per ISO week and data watermark

``AiDomain`` builds the subtree and the state its actors share (the gateway with its breaker and figures)
before the system starts; ``service(system)`` gives the ``AiService`` the HTTP layer calls. The breaker is
injectable (``breaker=``), so a shared per-dependency registry can own it; by default the domain makes one
named ``anthropic`` with the seeds' numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from kernel import ActorSystem, BreakerSnapshot, ChildSpec, CircuitBreaker, KeyedRef, Supervisor
from storage import Store

from ._config import AiConfig
from ._errors import AiUnavailable
from ._gateway import AiFigures, AnthropicGateway
from ._messages import MakeWeeklyReport, WeeklyReport
from ._reporter import GatewayKeeper, WeeklyReporter

BREAKER_NAME = "anthropic"
NOT_CONFIGURED_RETRY_AFTER = 60.0  # seconds: configuration changes need a restart anyway


@dataclass(frozen=True, slots=True, kw_only=True)
class AiState:
    """What /metrics and the operators read: whether it is configured, the breaker, this process's totals."""

    configured: bool
    model: str
    breaker: BreakerSnapshot
    figures: AiFigures


class AiDomain:
    name = "ai"

    def __init__(self, store: Store, config: AiConfig | None = None, *, breaker: CircuitBreaker | None = None) -> None:
        self.store = store
        self.config = config or AiConfig()
        self.breaker = breaker or CircuitBreaker(BREAKER_NAME, self.config.breaker)
        self.figures = AiFigures()
        self.gateway = AnthropicGateway(self.config, self.breaker, self.figures)

    def subtree(self) -> Supervisor:
        return Supervisor(self.name, strategy="one_for_one", max_restarts=20, within=60.0, base_delay=0.1,
                          max_delay=5.0, children=[
                              ChildSpec("gateway", GatewayKeeper, kwargs={"gateway": self.gateway}, mailbox=1),
                              ChildSpec("reports", WeeklyReporter, kwargs={"store": self.store,
                                                                           "gateway": self.gateway},
                                        keyed=True, idle_timeout=self.config.idle_timeout, mailbox=8),
                          ])

    def service(self, system: ActorSystem, *, under: str = "root") -> AiService:
        reports = system.ref(f"{under}/{self.name}/reports")
        if not isinstance(reports, KeyedRef):
            raise TypeError(f"{reports.path!r} is not the keyed reports child this domain builds")
        return AiService(reports=reports, domain=self)


class AiService:
    """Weekly reports; the provider's state for metrics."""

    def __init__(self, *, reports: KeyedRef, domain: AiDomain) -> None:
        self._reports = reports
        self._config = domain.config
        self._breaker = domain.breaker
        self._figures = domain.figures

    async def weekly_report(self, user_id: str) -> WeeklyReport:
        """The user's report of the last 7 days (cached while their data has not changed). Raises
        ``AiUnavailable`` when not configured, while the provider's breaker is open (unless a cached report
        exists), or when the provider failed or timed out."""
        if not self._config.configured:
            raise AiUnavailable("not_configured", "AI reports are not configured on this server",
                                retry_after=NOT_CONFIGURED_RETRY_AFTER)
        answer = await self._reports.key(user_id).ask(MakeWeeklyReport(), timeout=self._config.ask_timeout)
        assert isinstance(answer, WeeklyReport)
        return answer

    def breakers(self) -> dict[str, str]:
        """{breaker name: state} for /health."""
        snapshot = self._breaker.snapshot()
        return {snapshot.name: snapshot.state}

    def state(self) -> AiState:
        return AiState(configured=self._config.configured, model=self._config.model,
                       breaker=self._breaker.snapshot(), figures=self._figures)


__all__ = ["BREAKER_NAME", "AiDomain", "AiService", "AiState"]
