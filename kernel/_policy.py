"""Pure restart decisions: no I/O, no clock, no randomness of their own.

The supervisor runtime feeds them its history and trio's current time, so each rule here is
testable (and property-tested) on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

RestartType = Literal["permanent", "transient", "temporary"]
Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
ExitReason = Literal["normal", "crash"]

RESTART_TYPES: tuple[RestartType, ...] = ("permanent", "transient", "temporary")
STRATEGIES: tuple[Strategy, ...] = ("one_for_one", "one_for_all", "rest_for_one")


def should_restart(restart: RestartType, reason: ExitReason) -> bool:
    """permanent: always; transient: only after a crash; temporary: never."""
    if restart == "permanent":
        return True
    if restart == "transient":
        return reason == "crash"
    return False


def prune_window(history: Sequence[float], now: float, within: float) -> tuple[float, ...]:
    """The restarts still inside the window ``(now - within, now]``.

    A restart exactly ``within`` seconds old has left the window (as in OTP's supervisor).
    """
    horizon = now - within
    return tuple(t for t in history if t > horizon)


def record_restart(
    history: Sequence[float], now: float, *, max_restarts: int, within: float
) -> tuple[tuple[float, ...], bool]:
    """Add a restart at ``now``; return the new history and whether intensity is exceeded.

    Exceeded means more than ``max_restarts`` restarts inside the window, counting this one. Only
    the newest ``max_restarts + 1`` entries can matter, so the history never grows past that.
    """
    window = (*prune_window(history, now, within), now)[-(max_restarts + 1):]
    return window, len(window) > max_restarts


def backoff_delay(attempt: int, *, base_delay: float, max_delay: float, jitter: float) -> float:
    """``min(max_delay, base_delay * 2**attempt) * jitter``; ``attempt`` counts from 0."""
    if base_delay <= 0.0:
        return 0.0
    # Cap the exponent so a long crash streak cannot overflow the float.
    raw = base_delay * 2.0 ** min(attempt, 64)
    return min(max_delay, raw) * jitter


def consecutive_restarts(previous: int, ran_for: float, reset_after: float) -> int:
    """The backoff exponent for the next restart: reset once the child has run ``reset_after``."""
    return 0 if ran_for >= reset_after else previous


def restart_group(strategy: Strategy, names: Sequence[str], failed: str) -> tuple[str, ...]:
    """Which children (in start order) a failure of ``failed`` restarts."""
    if strategy == "one_for_one":
        return (failed,)
    if strategy == "one_for_all":
        return tuple(names)
    index = list(names).index(failed)
    return tuple(names[index:])


class RestartLimits(Protocol):
    """The numbers of a supervisor that restart decisions read (``kernel.Supervisor`` has them)."""

    @property
    def max_restarts(self) -> int: ...
    @property
    def within(self) -> float: ...
    @property
    def base_delay(self) -> float: ...
    @property
    def max_delay(self) -> float: ...
    @property
    def reset_after(self) -> float: ...


RestartAction = Literal["retire", "give_up", "restart"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RestartDecision:
    """What to do with a child that exited.

    ``retire``: not restarted (its restart type says so). ``give_up``: restarting it would exceed the
    intensity. ``restart``: start it again after ``delay`` seconds; ``attempt`` counts the restarts of
    its current streak from 1. ``history`` and ``consecutive`` are what the caller keeps for the next
    decision (unchanged on ``retire``).
    """

    action: RestartAction
    history: tuple[float, ...]
    consecutive: int
    attempt: int = 0
    delay: float = 0.0


def decide_restart(
    restart: RestartType,
    reason: ExitReason,
    *,
    history: Sequence[float],
    now: float,
    ran_for: float,
    consecutive: int,
    limits: RestartLimits,
    jitter: float,
) -> RestartDecision:
    """The one restart decision of the kernel, for a supervisor's child and for one key's actor alike.

    ``history`` holds the restart times the intensity counts, ``ran_for`` how long the child's last
    incarnation ran, ``consecutive`` its current streak and ``jitter`` a draw in [0.8, 1.2].
    """
    if not should_restart(restart, reason):
        return RestartDecision(action="retire", history=tuple(history), consecutive=consecutive)
    window, exceeded = record_restart(history, now, max_restarts=limits.max_restarts, within=limits.within)
    if exceeded:
        return RestartDecision(action="give_up", history=window, consecutive=consecutive)
    streak = consecutive_restarts(consecutive, ran_for, limits.reset_after)
    delay = backoff_delay(streak, base_delay=limits.base_delay, max_delay=limits.max_delay, jitter=jitter)
    return RestartDecision(action="restart", history=window, consecutive=streak + 1, attempt=streak + 1, delay=delay)
