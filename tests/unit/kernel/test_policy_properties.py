"""Property tests of the pure restart policy (kernel._policy): window, intensity, backoff, groups."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel import (
    RestartDecision,
    Supervisor,
    backoff_delay,
    consecutive_restarts,
    decide_restart,
    prune_window,
    record_restart,
    restart_group,
    should_restart,
)

# Deterministic: fixed derivation of examples, no example database.
PROFILE = settings(max_examples=300, derandomize=True, database=None, deadline=None)

finite_times = st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False)
windows = st.floats(min_value=1e-3, max_value=1e4, allow_nan=False, allow_infinity=False)
limits = st.integers(min_value=0, max_value=12)


@st.composite
def history_and_now(draw: st.DrawFn) -> tuple[tuple[float, ...], float]:
    now = draw(finite_times)
    past = st.floats(min_value=0.0, max_value=now, allow_nan=False, allow_infinity=False)
    return tuple(sorted(draw(st.lists(past, max_size=25)))), now


@PROFILE
@given(history_and_now(), windows, limits)
def test_record_restart_keeps_only_recent_entries_and_decides_by_count(
    hn: tuple[tuple[float, ...], float], within: float, max_restarts: int
) -> None:
    history, now = hn
    new, exceeded = record_restart(history, now, max_restarts=max_restarts, within=within)
    assert set(new) <= set(history) | {now}
    assert new[-1] == now
    assert list(new) == sorted(new)  # still chronological
    assert all(t > now - within for t in new[:-1])  # the window is (now - within, now]
    assert all(t <= now for t in new)
    assert len(new) <= max_restarts + 1
    assert exceeded == (len(new) > max_restarts)
    # Truncating the history never changes the decision.
    assert exceeded == (len(prune_window(history, now, within)) + 1 > max_restarts)


@PROFILE
@given(history_and_now(), windows, windows, limits)
def test_intensity_is_monotone_in_the_window(
    hn: tuple[tuple[float, ...], float], w1: float, w2: float, max_restarts: int
) -> None:
    history, now = hn
    small, large = sorted((w1, w2))
    assert set(prune_window(history, now, small)) <= set(prune_window(history, now, large))
    _, exceeded_small = record_restart(history, now, max_restarts=max_restarts, within=small)
    _, exceeded_large = record_restart(history, now, max_restarts=max_restarts, within=large)
    assert exceeded_large or not exceeded_small


@PROFILE
@given(history_and_now(), windows)
def test_prune_window_is_an_idempotent_filter(hn: tuple[tuple[float, ...], float], within: float) -> None:
    history, now = hn
    kept = prune_window(history, now, within)
    assert kept == tuple(t for t in history if t > now - within)
    assert prune_window(kept, now, within) == kept


@PROFILE
@given(st.lists(st.floats(min_value=0.0, max_value=50.0, allow_nan=False), max_size=40), windows, limits)
def test_incremental_recording_matches_counting_the_whole_past(
    gaps: list[float], within: float, max_restarts: int
) -> None:
    times = list(itertools.accumulate(gaps))
    history: tuple[float, ...] = ()
    for k, now in enumerate(times):
        history, exceeded = record_restart(history, now, max_restarts=max_restarts, within=within)
        in_window = 1 + sum(1 for t in times[:k] if t > now - within)
        assert exceeded == (in_window > max_restarts)


def test_the_window_boundary_examples_of_the_contract() -> None:
    history: tuple[float, ...] = ()
    for t in (0.0, 1.0, 2.0):
        history, exceeded = record_restart(history, t, max_restarts=3, within=5.0)
        assert not exceeded
    assert record_restart(history, 5.0, max_restarts=3, within=5.0) == ((1.0, 2.0, 5.0), False)
    assert record_restart(history, 4.999, max_restarts=3, within=5.0) == ((0.0, 1.0, 2.0, 4.999), True)


jitters = st.floats(min_value=0.8, max_value=1.2, allow_nan=False)
bases = st.floats(min_value=1e-3, max_value=100.0, allow_nan=False)
caps = st.floats(min_value=1e-3, max_value=1e4, allow_nan=False)


@PROFILE
@given(st.integers(min_value=0, max_value=60), bases, caps, jitters)
def test_backoff_delay_is_the_capped_exponential_times_the_jitter(
    attempt: int, base: float, cap: float, jitter: float
) -> None:
    delay = backoff_delay(attempt, base_delay=base, max_delay=cap, jitter=jitter)
    expected = min(cap, base * 2**attempt)
    assert delay == pytest.approx(expected * jitter, rel=1e-12)
    assert 0.8 * expected * (1 - 1e-12) <= delay <= 1.2 * expected * (1 + 1e-12)
    assert delay <= 1.2 * cap * (1 + 1e-12)


@PROFILE
@given(st.integers(min_value=0, max_value=200), bases, caps, jitters)
def test_backoff_delay_never_decreases_with_the_attempt(attempt: int, base: float, cap: float, jitter: float) -> None:
    now = backoff_delay(attempt, base_delay=base, max_delay=cap, jitter=jitter)
    later = backoff_delay(attempt + 1, base_delay=base, max_delay=cap, jitter=jitter)
    assert later >= now


@PROFILE
@given(st.integers(min_value=5, max_value=10**9), jitters)
def test_backoff_delay_stays_finite_for_huge_attempts(attempt: int, jitter: float) -> None:
    assert backoff_delay(attempt, base_delay=1.0, max_delay=30.0, jitter=jitter) == pytest.approx(30.0 * jitter)
    assert math.isfinite(backoff_delay(attempt, base_delay=1.0, max_delay=math.inf, jitter=jitter))


@PROFILE
@given(st.integers(min_value=0, max_value=100), caps, jitters)
def test_zero_base_delay_means_no_delay(attempt: int, cap: float, jitter: float) -> None:
    assert backoff_delay(attempt, base_delay=0.0, max_delay=cap, jitter=jitter) == 0.0


names_lists = st.lists(st.text(alphabet="abcdefgh", min_size=1, max_size=4), min_size=1, max_size=12, unique=True)


@PROFILE
@given(names_lists, st.data())
def test_restart_group_invariants(names: list[str], data: st.DataObject) -> None:
    failed = data.draw(st.sampled_from(names))
    one = restart_group("one_for_one", names, failed)
    everyone = restart_group("one_for_all", names, failed)
    rest = restart_group("rest_for_one", names, failed)
    assert one == (failed,)
    assert everyone == tuple(names)
    assert rest == tuple(names[names.index(failed):])
    for group in (one, everyone, rest):
        assert failed in group
        assert [n for n in names if n in group] == list(group)  # in start order
    assert set(one) <= set(rest) <= set(everyone)


@pytest.mark.parametrize(
    ("restart", "reason", "expected"),
    [
        ("permanent", "crash", True), ("permanent", "normal", True),
        ("transient", "crash", True), ("transient", "normal", False),
        ("temporary", "crash", False), ("temporary", "normal", False),
    ],
)
def test_should_restart_table(restart: str, reason: str, expected: bool) -> None:
    assert should_restart(restart, reason) is expected  # type: ignore[arg-type]


@PROFILE
@given(st.integers(min_value=0, max_value=1000), finite_times, finite_times)
def test_consecutive_restarts_resets_only_after_reset_after(previous: int, ran_for: float, reset_after: float) -> None:
    result = consecutive_restarts(previous, ran_for, reset_after)
    assert result == (0 if ran_for >= reset_after else previous)


restart_types = st.sampled_from(["permanent", "transient", "temporary"])
exit_reasons = st.sampled_from(["normal", "crash"])


@st.composite
def supervisors(draw: st.DrawFn) -> Supervisor:
    return Supervisor(
        "s", max_restarts=draw(limits), within=draw(windows), base_delay=draw(st.sampled_from([0.0, 0.01, 1.0])),
        max_delay=draw(caps), reset_after=draw(st.floats(min_value=0.0, max_value=1e4, allow_nan=False)),
    )


@PROFILE
@given(restart_types, exit_reasons, history_and_now(), finite_times, st.integers(min_value=0, max_value=70),
       supervisors(), jitters)
def test_decide_restart_is_the_composition_of_the_rules(
    restart: str, reason: str, hn: tuple[tuple[float, ...], float], ran_for: float, consecutive: int,
    limits: Supervisor, jitter: float,
) -> None:
    history, now = hn
    decision = decide_restart(restart, reason, history=history, now=now, ran_for=ran_for,  # type: ignore[arg-type]
                              consecutive=consecutive, limits=limits, jitter=jitter)
    assert isinstance(decision, RestartDecision)
    if not should_restart(restart, reason):  # type: ignore[arg-type]
        # Retired: nothing is recorded, the streak is kept as it was.
        assert decision == RestartDecision(action="retire", history=history, consecutive=consecutive)
        return
    window, exceeded = record_restart(history, now, max_restarts=limits.max_restarts, within=limits.within)
    assert decision.history == window
    if exceeded:
        assert (decision.action, decision.consecutive, decision.delay) == ("give_up", consecutive, 0.0)
        return
    streak = consecutive_restarts(consecutive, ran_for, limits.reset_after)
    assert decision.action == "restart"
    assert decision.attempt == decision.consecutive == streak + 1  # attempt counts from 1
    assert decision.delay == backoff_delay(streak, base_delay=limits.base_delay, max_delay=limits.max_delay,
                                           jitter=jitter)
    assert decision.delay <= max(limits.max_delay * 1.2, 0.0)


@PROFILE
@given(st.lists(st.floats(min_value=0.0, max_value=5.0, allow_nan=False), min_size=1, max_size=30), supervisors(),
       jitters)
def test_a_crash_loop_restarts_at_most_max_restarts_times_in_a_window_then_gives_up(
    gaps: list[float], limits: Supervisor, jitter: float
) -> None:
    # Feeding each decision back in, as both shells do: the streak grows by one per restart until a
    # long enough run resets it, and giving up comes exactly when the window holds too many restarts.
    history: tuple[float, ...] = ()
    consecutive, now = 0, 0.0
    for gap in gaps:
        now += gap
        decision = decide_restart("permanent", "crash", history=history, now=now, ran_for=gap,
                                  consecutive=consecutive, limits=limits, jitter=jitter)
        history = decision.history
        assert len(history) <= limits.max_restarts + 1
        if decision.action == "give_up":
            assert len(history) == limits.max_restarts + 1
            return
        expected = 1 if gap >= limits.reset_after else consecutive + 1
        assert decision.consecutive == expected
        consecutive = decision.consecutive
