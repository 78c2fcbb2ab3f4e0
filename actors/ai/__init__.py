"""The AI weekly report (API.md "AI and exports"): a summary of the user's last 7 days of read models (rollups,
sleep nights, session impacts) from Anthropic's Messages API, redacted by construction, cached per (user, ISO
week, data mark) while the data it was made from is unchanged (``_reporter``), every call's tokens recorded;
the provider behind a circuit breaker, a timeout and retries (``_gateway``).

Its errors (``AiError`` and below) are drawn in ``_errors``; storage's own pass through.
"""

from ._config import ANTHROPIC_BREAKER, DEFAULT_BASE_URL, DEFAULT_MODEL, AiConfig
from ._errors import AiError, AiUnavailable, UnavailableReason
from ._gateway import OUTCOMES, AiFigures, AnthropicGateway, CallOutcome, Completion, call_outcome, classify
from ._messages import MakeWeeklyReport, WeeklyReport
from ._prompt import (
    MAX_SESSIONS,
    SYSTEM_PROMPT,
    WINDOW_DAYS,
    RedactionError,
    WeekData,
    build_prompt,
    check_redacted,
    iso_week,
    report_window,
    window_span,
)
from ._reporter import GatewayKeeper, WeeklyReporter
from ._service import BREAKER_NAME, AiDomain, AiService, AiState

__all__ = [
    "ANTHROPIC_BREAKER",
    "BREAKER_NAME",
    "DEFAULT_BASE_URL",
    "DEFAULT_MODEL",
    "MAX_SESSIONS",
    "OUTCOMES",
    "SYSTEM_PROMPT",
    "WINDOW_DAYS",
    "AiConfig",
    "AiDomain",
    "AiError",
    "AiFigures",
    "AiService",
    "AiState",
    "AiUnavailable",
    "AnthropicGateway",
    "CallOutcome",
    "Completion",
    "GatewayKeeper",
    "MakeWeeklyReport",
    "RedactionError",
    "UnavailableReason",
    "WeekData",
    "WeeklyReport",
    "WeeklyReporter",
    "build_prompt",
    "call_outcome",
    "check_redacted",
    "classify",
    "iso_week",
    "report_window",
    "window_span",
]
