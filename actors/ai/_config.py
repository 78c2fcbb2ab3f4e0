"""The AI domain's configuration: one frozen value, built from ``VIGIL_ANTHROPIC_*`` by the entry point."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from kernel import BreakerConfig, RetryPolicy

DEFAULT_MODEL = "claude-sonnet-4-5"
DEFAULT_BASE_URL = "https://api.anthropic.com"

# The seeds' numbers for an external API: open at >= 50 % failures over >= 5 calls within 10 s, or 5 failures
# in a row; stay open 30 s; then at most 3 probes at once.
ANTHROPIC_BREAKER = BreakerConfig(window=10.0, min_calls=5, failure_rate=0.5, consecutive_failures=5,
                                  open_for=30.0, half_open_probes=3)


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class AiConfig:
    api_key: str | None = None  # None or empty: not configured (503 AI_UNAVAILABLE)
    base_url: str | None = None  # None: Anthropic's
    model: str = DEFAULT_MODEL
    max_tokens: int = 1024
    # One attempt (connect, send, read) may take this long; all attempts and the waits between them together
    # take at most ``deadline`` (a retry that would end past it is not started).
    timeout: float = 30.0
    deadline: float = 60.0
    # 3 calls at most: the seeds' "3 retries for Anthropic" bounded by the deadline; 429's Retry-After is a floor.
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(attempts=3, initial=0.5, multiplier=2.0,
                                                                    cap=8.0))
    breaker: BreakerConfig = ANTHROPIC_BREAKER
    idle_timeout: float = 300.0  # a user's reporter stops after this long without a request
    seed: int | None = None  # the retry jitter's source (tests)

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.deadline <= 0 or self.max_tokens < 1:
            raise ValueError("timeout and deadline must be > 0 and max_tokens >= 1")
        if not self.model:
            raise ValueError("model must not be empty")

    @property
    def configured(self) -> bool:
        return bool(self.api_key)

    @property
    def ask_timeout(self) -> float:
        """How long the facade waits for a reporter: the provider's deadline plus the reads and writes."""
        return self.deadline + 30.0

    def __repr__(self) -> str:
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        shown["api_key"] = "<redacted>" if self.api_key else None
        return "AiConfig(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"


__all__ = ["ANTHROPIC_BREAKER", "DEFAULT_BASE_URL", "DEFAULT_MODEL", "AiConfig"]
