"""The one way out to Anthropic's Messages API: the SDK's async client behind a breaker, a timeout and retries.

    complete(prompt) ──breaker.allow?──no──▶ CircuitOpen (no request)
                      └─yes─▶ POST /v1/messages (timeout per attempt)
                               ├─ 2xx ─────────────▶ success (tokens counted)
                               ├─ 429 / 5xx / connection / timeout ─▶ breaker failure; retried (429 waits at
                               │                                      least Retry-After) within the deadline
                               └─ other 4xx ──────▶ breaker success (the service answered); not retried

How the async client runs on trio. Three ways were measured (``bench/ai.py``: sequential calls to a loopback
fake, the ways interleaved, in one trio run with a trio-asyncio loop open, on the shared 2-core machine under
the other engineers' load): the SDK's ``AsyncAnthropic`` awaited directly under trio ~1.3 ms/call; the same
client through the process's trio-asyncio loop (``aio_as_trio``) ~3.5 ms; the sync ``Anthropic`` client in
``trio.to_thread.run_sync(abandon_on_cancel=True)`` ~2.1 ms; a raw ``httpx2`` POST ~0.7 ms. The SDK's async
client is not asyncio code: it is httpx2 over anyio, and anyio runs natively on trio. So it is awaited directly,
the cleanest and fastest of the three: no bridge (no asyncio loop needed, nothing to translate), no thread (a
cancelled call really stops: the socket is closed, where an abandoned thread would keep the request running
until its own timeout, unseen by the breaker), and trio's clock and cancel scopes apply as anywhere else. The
SDK's own retries are off (``max_retries=0``): ``kernel.retry_call`` decides, with the breaker.

Retrying is safe: generating a report changes nothing on Anthropic's side (no idempotency concern), and each
attempt is recorded (usage rows and ``AiFigures``) with its outcome and tokens.

The SDK is imported on first use (``_sdk``), not with this module: importing it takes ~2 s here, two thirds of a
server's start-up, for a feature many deployments never configure. Its errors are translated once, here, into
``ProviderTimeout`` / ``ProviderFailed``: nothing else in Vigil names the SDK.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

import trio

from kernel import (
    NO_RETRY,
    CircuitBreaker,
    CircuitOpen,
    RetryAfter,
    RetryDecision,
    http_status_decision,
    parse_retry_after,
    retry_call,
)
from storage import AiUsage

from ._config import DEFAULT_BASE_URL, AiConfig

if TYPE_CHECKING:
    import anthropic


def _sdk() -> ModuleType:
    import anthropic

    return anthropic


def _loaded_sdk() -> ModuleType | None:
    """The SDK if something imported it already: an error cannot be the SDK's before that."""
    return sys.modules.get("anthropic")


class ProviderTimeout(Exception):
    """The provider did not answer within an attempt's timeout (after the retries)."""


class ProviderFailed(Exception):
    """The provider failed (after the retries); ``retry_after``: the delay it asked for, if any."""

    def __init__(self, message: str, *, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

CallOutcome = Literal["ok", "rate_limited", "server_error", "client_error", "timeout", "connection_error"]
OUTCOMES: tuple[CallOutcome, ...] = ("ok", "rate_limited", "server_error", "client_error", "timeout",
                                     "connection_error")


@dataclass(frozen=True, slots=True, kw_only=True)
class Completion:
    text: str
    model: str  # the model that answered, as the API names it
    input_tokens: int
    output_tokens: int


@dataclass(slots=True)
class AiFigures:
    """This process's totals since it started (``/metrics``): tokens by direction, provider calls by outcome
    (plus ``breaker_open``: calls refused without a request)."""

    tokens: dict[str, int] = field(default_factory=lambda: {"input": 0, "output": 0})
    calls: dict[str, int] = field(default_factory=lambda: dict.fromkeys((*OUTCOMES, "breaker_open"), 0))


def call_outcome(error: Exception) -> CallOutcome:
    """How a failed attempt ended."""
    anthropic = _loaded_sdk()
    if anthropic is None:
        return "connection_error"
    if isinstance(error, anthropic.APITimeoutError):
        return "timeout"
    if isinstance(error, anthropic.APIConnectionError):
        return "connection_error"
    if isinstance(error, anthropic.APIStatusError):
        status = error.status_code
        return "rate_limited" if status == 429 else "server_error" if status >= 500 else "client_error"
    return "connection_error"


def classify(error: Exception) -> RetryDecision:
    """429 (honouring Retry-After), 5xx, connection errors and timeouts are retried; nothing else."""
    anthropic = _loaded_sdk()
    if anthropic is None:
        return NO_RETRY
    if isinstance(error, anthropic.APIStatusError):
        return http_status_decision(error.status_code, parse_retry_after(error.response.headers.get("retry-after")))
    if isinstance(error, anthropic.APIConnectionError):
        return RetryAfter()
    return NO_RETRY


def is_dependency_failure(error: Exception) -> bool:
    """What counts against the breaker: the dependency being down or overloaded, not a refused request."""
    return call_outcome(error) != "client_error"


class AnthropicGateway:
    """Completions through one breaker (injectable: a shared per-dependency registry may own it)."""

    def __init__(self, config: AiConfig, breaker: CircuitBreaker, figures: AiFigures) -> None:
        self.config = config
        self.breaker = breaker
        self.figures = figures
        self._rng = random.Random(config.seed)
        self._client: anthropic.AsyncAnthropic | None = None  # opened on first use, in the running trio

    def _open(self) -> anthropic.AsyncAnthropic:
        if not self.config.configured:
            raise RuntimeError("the AI gateway is not configured")
        if self._client is None:
            key = self.config.api_key
            # The key goes in x-api-key only (the Messages API's header); this SDK version would otherwise send
            # it as "Authorization: Bearer", which the API reads as an OAuth token.
            # (The SDK accepts Omit() in default_headers to drop a header; its annotation says str.)
            anthropic = _sdk()
            auth: dict[str, Any] = {"x-api-key": key or "", "Authorization": anthropic.Omit()}
            self._client = anthropic.AsyncAnthropic(
                api_key=key, base_url=self.config.base_url or DEFAULT_BASE_URL, max_retries=0,
                timeout=self.config.timeout, default_headers=auth)
        return self._client

    async def aclose(self) -> None:
        """Close the connection pool (a later call opens a new one)."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def complete(self, *, user_id: str, system: str, prompt: str,
                       record: Callable[[AiUsage], None]) -> Completion:
        """One completion, retried per the config within ``config.deadline``. ``record`` hears every attempt
        (its usage row). Raises CircuitOpen (refused, maybe after failed attempts), trio.TooSlowError (the
        deadline passed), ProviderTimeout or ProviderFailed (the last attempt's SDK error, translated)."""
        client = self._open()
        model = self.config.model

        async def attempt() -> Completion:
            if not self.breaker.allow():
                self.figures.calls["breaker_open"] += 1
                raise CircuitOpen(self.breaker.name, self.breaker.snapshot().retry_after)
            try:
                message = await client.messages.create(
                    model=model, max_tokens=self.config.max_tokens, system=system,
                    messages=[{"role": "user", "content": prompt}])
            except Exception as error:
                (self.breaker.record_failure if is_dependency_failure(error) else self.breaker.record_success)()
                self._count(record, AiUsage(user_id=user_id, model=model, outcome=call_outcome(error)))
                raise
            except BaseException:
                self.breaker.record_abandoned()  # cancelled: no outcome, the probe slot is freed
                raise
            self.breaker.record_success()
            usage = message.usage
            self._count(record, AiUsage(user_id=user_id, model=model, outcome="ok", input_tokens=usage.input_tokens,
                                        output_tokens=usage.output_tokens))
            text = "".join(block.text for block in message.content if block.type == "text").strip()
            return Completion(text=text, model=message.model or model, input_tokens=usage.input_tokens,
                              output_tokens=usage.output_tokens)

        try:
            with trio.fail_after(self.config.deadline):
                return await retry_call(attempt, policy=self.config.retry, classify=_not_when_open, rng=self._rng)
        except Exception as error:
            raise _translated(error) from error

    def _count(self, record: Callable[[AiUsage], None], usage: AiUsage) -> None:
        self.figures.calls[usage.outcome] += 1
        self.figures.tokens["input"] += usage.input_tokens
        self.figures.tokens["output"] += usage.output_tokens
        record(usage)


def _translated(error: Exception) -> Exception:
    """The SDK's errors as ours; anything else (CircuitOpen, trio.TooSlowError, a bug) as it is."""
    anthropic = _loaded_sdk()
    if anthropic is None or not isinstance(error, anthropic.APIError):
        return error
    if isinstance(error, anthropic.APITimeoutError):
        return ProviderTimeout("the AI provider did not answer in time")
    hint = None
    if isinstance(error, anthropic.APIStatusError):
        hint = parse_retry_after(error.response.headers.get("retry-after"))
    return ProviderFailed(f"the AI provider failed: {type(error).__name__}", retry_after=hint)


def _not_when_open(error: Exception) -> RetryDecision:
    return NO_RETRY if isinstance(error, CircuitOpen) else classify(error)


__all__ = ["OUTCOMES", "AiFigures", "AnthropicGateway", "CallOutcome", "Completion", "ProviderFailed",
           "ProviderTimeout", "call_outcome", "classify", "is_dependency_failure"]
