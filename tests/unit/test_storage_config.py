"""Storage configuration: the retry and outbox backoff schedules, and the shared checks."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage import OutboxPolicy, RetryPolicy
from storage.coordination import BusConfig


def equal_jitter_as_before(attempt: int, base: float, maximum: float, jitter: float, draw: float) -> float:
    """Storage's own formula before it called ``kernel.backoff_delay``: the reference."""
    ceiling = min(maximum, base * 2.0 ** min(max(attempt - 1, 0), 62))
    return ceiling * (1.0 - jitter * draw)


delays = st.floats(min_value=0.0, exclude_min=True, allow_nan=False, allow_infinity=False)
jitters = st.floats(min_value=0.0, max_value=1.0)
draws = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)
attempts = st.integers(min_value=-3, max_value=10_000)


@given(attempts, delays, delays, jitters, draws)
def test_outbox_backoff_is_unchanged_by_the_move_to_the_kernel(
    attempt: int, base: float, maximum: float, jitter: float, draw: float
) -> None:
    policy = OutboxPolicy(base_delay=base, max_delay=maximum, jitter=jitter)
    assert policy.delay(attempt, draw) == equal_jitter_as_before(attempt, base, maximum, jitter, draw)


@given(attempts, delays, delays, jitters, st.integers())
def test_retry_backoff_is_unchanged_by_the_move_to_the_kernel(
    failures: int, base: float, maximum: float, jitter: float, seed: int
) -> None:
    policy = RetryPolicy(base_delay=base, max_delay=maximum, jitter=jitter)
    draw = random.Random(seed).random()
    expected = equal_jitter_as_before(failures, base, maximum, jitter, draw)
    assert policy.delay(failures, random.Random(seed)) == expected


@pytest.mark.parametrize("value", [0, -1.0, math.inf, math.nan])
def test_storage_and_coordination_refuse_non_positive_settings_alike(value: float) -> None:
    with pytest.raises(ValueError, match=r"OutboxPolicy\.lease_seconds must be a positive finite number"):
        OutboxPolicy(lease_seconds=value)
    with pytest.raises(ValueError, match=r"BusConfig\.subscribe_timeout must be a positive finite number"):
        BusConfig(subscribe_timeout=value)
