"""A circuit breaker: stop calling something that keeps failing, then let a few probes decide.

    closed ──(consecutive_failures in a row, or >= min_calls in the window with failure share >= failure_rate)──▶ open
    open ──(open_for seconds later, on the next look)──▶ half_open   (at most half_open_probes calls in flight)
    half_open ──(a probe succeeds)──▶ closed        half_open ──(a probe fails)──▶ open

The decisions are one pure function, ``breaker_step(state, event, now, config)``, property-tested on its own;
``CircuitBreaker`` is the thin shell that keeps the state, reads trio's clock and reports transitions.
Errors (one, an ``Exception`` but not a ``KernelError``: it is the caller's policy, not the runtime's):

    Exception
     └── CircuitOpen   the breaker refused the call; ``.name``, ``.retry_after`` (seconds, 0 while probing)
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, NamedTuple, TypeVar

import trio

T = TypeVar("T")

BreakerStateName = Literal["closed", "open", "half_open"]
# "call": may a call start?  "success"/"failure": an admitted call ended so.  "abandon": an admitted call
# ended without an outcome (cancelled): it frees its probe slot and counts for nothing.
BreakerEvent = Literal["call", "success", "failure", "abandon"]


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerConfig:
    window: float  # seconds of outcomes the failure rate looks at
    min_calls: int  # outcomes in the window before the rate may open the breaker
    failure_rate: float  # 0..1
    consecutive_failures: int  # this many failures in a row open it whatever the rate
    open_for: float  # seconds before the first probe
    half_open_probes: int  # probes in flight at once
    # A call that succeeds but takes longer than this (seconds) counts as a failure; None: no limit.
    call_timeout: float | None = None

    def __post_init__(self) -> None:
        if self.window <= 0 or self.open_for < 0:
            raise ValueError("window must be > 0 and open_for >= 0")
        if self.call_timeout is not None and not self.call_timeout > 0:
            raise ValueError("call_timeout must be > 0 (or None)")
        if self.min_calls < 1 or self.consecutive_failures < 1 or self.half_open_probes < 1:
            raise ValueError("min_calls, consecutive_failures and half_open_probes must be >= 1")
        if not 0.0 <= self.failure_rate <= 1.0:
            raise ValueError("failure_rate must be within 0..1")


class BreakerState(NamedTuple):  # a tuple: built on every outcome, so it must be cheap to build
    """Everything a decision reads. ``outcomes`` are the window's outcomes counted in buckets of
    ``window / BUCKETS`` seconds, oldest first: (bucket start, calls, failures). A bucket leaves the window
    when its start does, so the window looks back between ``window`` less one bucket and ``window``; the state
    stays small (at most BUCKETS + 1 buckets) however many calls a busy dependency sees."""

    state: BreakerStateName = "closed"
    consecutive_failures: int = 0
    outcomes: tuple[tuple[float, int, int], ...] = ()
    opened_at: float | None = None
    probes: int = 0  # probes admitted and not yet ended (half_open only)


BUCKETS = 10  # per window, as opossum's rollingCountBuckets

Outcomes = tuple[tuple[float, int, int], ...]


def _prune(outcomes: Outcomes, now: float, window: float) -> Outcomes:
    horizon = now - window  # a bucket that started exactly ``window`` ago has left, as prune_window's restarts do
    if not outcomes or outcomes[0][0] > horizon:
        return outcomes
    return tuple(o for o in outcomes if o[0] > horizon)


def _counted(outcomes: Outcomes, now: float, window: float, failed: bool) -> Outcomes:
    """``outcomes`` (pruned at ``now``) with one more outcome in the bucket ``now`` falls in."""
    width = window / BUCKETS
    start = math.floor(now / width) * width
    kept = _prune(outcomes, now, window)
    if kept and kept[-1][0] == start:
        _, calls, failures = kept[-1]
        return (*kept[:-1], (start, calls + 1, failures + int(failed)))
    if start <= now - window:  # a window narrower than float steps: the outcome leaves at once
        return kept
    return (*kept, (start, 1, int(failed)))


def _trips(state: BreakerState, config: BreakerConfig) -> bool:
    if state.consecutive_failures >= config.consecutive_failures:
        return True
    calls = sum(c for _, c, _ in state.outcomes)
    failures = sum(f for _, _, f in state.outcomes)
    return calls >= config.min_calls and failures >= config.failure_rate * calls


def _opened(now: float) -> BreakerState:
    return BreakerState(state="open", opened_at=now)


def breaker_step(state: BreakerState, event: BreakerEvent, now: float,
                 config: BreakerConfig) -> tuple[BreakerState, bool]:
    """The state after ``event`` at ``now``, and (for "call") whether the call may run.

    An open breaker turns half_open on the first event at least ``open_for`` after it opened. Outcomes that
    arrive while open (calls admitted before it opened) change nothing: the open period is already decided.
    """
    if state.state == "open" and state.opened_at is not None and now >= state.opened_at + config.open_for:
        state = BreakerState(state="half_open", opened_at=state.opened_at)
    if state.state == "open":
        return state, False
    if state.state == "half_open":
        if event == "call":
            if state.probes >= config.half_open_probes:
                return state, False
            return state._replace(probes=state.probes + 1), True
        if event == "success":
            return BreakerState(), False
        if event == "failure":
            return _opened(now), False
        return state._replace(probes=max(0, state.probes - 1)), False
    # closed
    if event in ("call", "abandon"):
        return state, event == "call"
    failed = event == "failure"
    after = BreakerState(
        consecutive_failures=state.consecutive_failures + 1 if failed else 0,
        outcomes=_counted(state.outcomes, now, config.window, failed),
    )
    if failed and _trips(after, config):
        return _opened(now), False
    return after, False


def call_outcome(failed: bool, elapsed: float, config: BreakerConfig) -> BreakerEvent:
    """How an admitted call that ended after ``elapsed`` seconds counts: a slow success is a failure."""
    if failed or (config.call_timeout is not None and elapsed > config.call_timeout):
        return "failure"
    return "success"


def retry_after(state: BreakerState, now: float, config: BreakerConfig) -> float:
    """Seconds until an open breaker lets a probe through (0 when closed or half_open)."""
    if state.state != "open" or state.opened_at is None:
        return 0.0
    return max(0.0, state.opened_at + config.open_for - now)


class CircuitOpen(Exception):  # noqa: N818 - the name the contract uses
    def __init__(self, name: str, retry_after: float) -> None:
        super().__init__(f"circuit {name!r} is open (retry after {retry_after:g} s)")
        self.name = name
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerSnapshot:
    name: str
    state: BreakerStateName
    consecutive_failures: int
    calls: int  # outcomes inside the window
    failures: int
    opened_at: float | None
    retry_after: float
    # Totals since the breaker was made (the shell's counters): calls that ended with an outcome (successes +
    # failures), those outcomes, and calls refused.
    requests: int = 0
    successes: int = 0
    failures_total: int = 0
    rejected: int = 0


class CircuitBreaker:
    """The shell over ``breaker_step``: keeps the state, reads ``trio.current_time()``, reports transitions
    to ``on_transition(name, old, new, now)``. Not thread-safe; one trio run at a time."""

    def __init__(self, name: str, config: BreakerConfig,
                 on_transition: Callable[[str, str, str, float], None] | None = None) -> None:
        self.name = name
        self.config = config
        self._on_transition = on_transition
        self._state = BreakerState()
        self.successes = self.failures = self.rejected = 0

    def _apply(self, event: BreakerEvent, now: float | None = None) -> bool:
        if now is None:
            now = trio.current_time()
        before = self._state.state
        self._state, admitted = breaker_step(self._state, event, now, self.config)
        if self._state.state != before and self._on_transition is not None:
            self._on_transition(self.name, before, self._state.state, now)
        return admitted

    @property
    def state(self) -> BreakerStateName:
        """The state as last decided (a look that should see open -> half_open in time: ``snapshot``)."""
        return self._state.state

    def allow(self) -> bool:
        """Whether a call may start now (a probe slot is taken when half_open: end it with record_*)."""
        # Closed admits every call and stays as it is (breaker_step's rule): no clock, no new state.
        if self._state.state == "closed" or self._apply("call"):
            return True
        self.rejected += 1
        return False

    def seconds_open(self) -> float:
        """Seconds until an open breaker lets a probe through; 0 when it would admit a call now (a pure
        look: no transition, no probe slot taken)."""
        return retry_after(self._state, trio.current_time(), self.config)

    def refusal(self) -> CircuitOpen:
        """The error for a call ``allow`` just refused."""
        return CircuitOpen(self.name, retry_after(self._state, trio.current_time(), self.config))

    def record_success(self) -> None:
        self.successes += 1
        self._apply("success")

    def record_failure(self) -> None:
        self.failures += 1
        self._apply("failure")

    def record(self, *, failed: bool, started: float) -> None:
        """End an admitted call that started at ``started`` (trio's clock): past ``call_timeout`` it failed."""
        now = trio.current_time()
        event = call_outcome(failed, now - started, self.config)
        if event == "failure":
            self.failures += 1
        else:
            self.successes += 1
        self._apply(event, now)

    def record_abandoned(self) -> None:
        """An allowed call ended without an outcome (cancelled): frees its probe slot, counts for nothing."""
        self._apply("abandon")

    def snapshot(self) -> BreakerSnapshot:
        # "abandon" is a no-op apart from the time-driven open -> half_open, which a look should show.
        if self._state.state == "open":
            self._apply("abandon")
        now = trio.current_time()
        outcomes = _prune(self._state.outcomes, now, self.config.window)
        return BreakerSnapshot(
            name=self.name, state=self._state.state, consecutive_failures=self._state.consecutive_failures,
            calls=sum(c for _, c, _ in outcomes), failures=sum(f for _, _, f in outcomes),
            opened_at=self._state.opened_at, retry_after=retry_after(self._state, now, self.config),
            requests=self.successes + self.failures, successes=self.successes, failures_total=self.failures,
            rejected=self.rejected)

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any,
                   failures: type[BaseException] | tuple[type[BaseException], ...] = Exception,
                   admit: bool = True) -> T:
        """``await fn(*args)`` as one call: CircuitOpen before it when refused (``admit=False``: an unrefused
        continuation of an admitted call, which only reports). An exception of ``failures`` is a failure; any
        other ``Exception`` is an answer of the dependency (a success, unless past ``call_timeout``);
        Cancelled and other BaseExceptions count for nothing. Exceptions propagate unchanged."""
        if admit and not self.allow():
            raise self.refusal()
        started = trio.current_time()
        try:
            result = await fn(*args)
        except failures:
            self.record_failure()
            raise
        except Exception:
            self.record(failed=False, started=started)
            raise
        except BaseException:
            self.record_abandoned()
            raise
        self.record(failed=False, started=started)
        return result

    def guard(self) -> _Guard:
        """``async with breaker.guard():`` runs the body as one call: CircuitOpen before it when refused; an
        ``Exception`` from it is a failure (re-raised), a normal exit a success (a failure past
        ``call_timeout``); Cancelled and other BaseExceptions count for nothing."""
        return _Guard(self)


class _Guard:
    """``CircuitBreaker.guard``'s context manager (a class: cheaper than a generator on every call)."""

    __slots__ = ("_breaker", "_started")

    def __init__(self, breaker: CircuitBreaker) -> None:
        self._breaker = breaker
        self._started = 0.0

    async def __aenter__(self) -> None:
        breaker = self._breaker
        if not breaker.allow():
            raise breaker.refusal()
        self._started = trio.current_time()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        breaker = self._breaker
        if exc_type is None:
            breaker.record(failed=False, started=self._started)
        elif issubclass(exc_type, Exception):
            breaker.record_failure()
        else:
            breaker.record_abandoned()


__all__ = ["BreakerConfig", "BreakerEvent", "BreakerSnapshot", "BreakerState", "BreakerStateName",
           "CircuitBreaker", "CircuitOpen", "breaker_step", "call_outcome", "retry_after"]
