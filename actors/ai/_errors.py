"""The AI domain's errors.

    AiError
     └── AiUnavailable   no report now: not configured, the provider's breaker open, or the provider failed
                         (after the retries) or timed out; ``retry_after`` says when trying again makes sense

Storage's own errors pass through; transport maps all of them to HTTP once (503 AI_UNAVAILABLE).
"""

from __future__ import annotations

from typing import Literal

UnavailableReason = Literal["not_configured", "breaker_open", "upstream_error", "timeout"]


class AiError(Exception):
    """Base of the AI domain's errors."""


class AiUnavailable(AiError):
    def __init__(self, reason: UnavailableReason, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.reason: UnavailableReason = reason
        self.message = message
        self.retry_after = retry_after  # seconds


__all__ = ["AiError", "AiUnavailable", "UnavailableReason"]
