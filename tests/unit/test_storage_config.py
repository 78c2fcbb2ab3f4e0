"""Storage configuration: the retry and outbox backoff schedules, and the shared checks."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

import kernel
from storage import OutboxPolicy, RetryPolicy, StoreConfig
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


def test_the_store_retries_with_the_one_retry_policy() -> None:
    """The store's retries are kernel.retry_call's (full jitter); the database states its own numbers."""
    assert RetryPolicy is kernel.RetryPolicy
    assert StoreConfig().retry == kernel.RetryPolicy(attempts=5, initial=0.02, multiplier=2.0, cap=1.0)


@pytest.mark.parametrize("value", [0, -1.0, math.inf, math.nan])
def test_storage_and_coordination_refuse_non_positive_settings_alike(value: float) -> None:
    with pytest.raises(ValueError, match=r"OutboxPolicy\.lease_seconds must be a positive finite number"):
        OutboxPolicy(lease_seconds=value)
    with pytest.raises(ValueError, match=r"BusConfig\.subscribe_timeout must be a positive finite number"):
        BusConfig(subscribe_timeout=value)
