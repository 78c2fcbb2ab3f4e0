"""Pure restart decisions: no I/O, no clock, no randomness of their own.

The supervisor runtime feeds them its history and trio's current time, so each rule here is
testable (and property-tested) on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

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
