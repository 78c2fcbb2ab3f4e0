"""The circuit breaker: the pure decisions (property-tested) and the shell under trio's MockClock."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel import BreakerConfig, BreakerEvent, BreakerState, CircuitBreaker, CircuitOpen, breaker_step
from kernel._breaker import BUCKETS

PROFILE = settings(max_examples=300, derandomize=True, database=None, deadline=None)

FIVE = BreakerConfig(window=60.0, min_calls=1000, failure_rate=1.0, consecutive_failures=5, open_for=30.0,
                     half_open_probes=1)


class Boom(Exception):
    pass


def _run(steps: Sequence[tuple[BreakerEvent, float]], config: BreakerConfig) -> list[tuple[BreakerState, bool]]:
    state, out = BreakerState(), []
    for event, now in steps:
        state, admitted = breaker_step(state, event, now, config)
        out.append((state, admitted))
    return out


# -- the pure function -----------------------------------------------------------------------------------------

configs = st.builds(
    BreakerConfig,
    window=st.floats(min_value=0.5, max_value=100.0),
    min_calls=st.integers(min_value=1, max_value=20),
    failure_rate=st.floats(min_value=0.0, max_value=1.0),
    consecutive_failures=st.integers(min_value=1, max_value=8),
    open_for=st.floats(min_value=0.0, max_value=50.0),
    half_open_probes=st.integers(min_value=1, max_value=3),
)
events: st.SearchStrategy[BreakerEvent] = st.sampled_from(["call", "success", "failure", "abandon"])


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[BreakerEvent, float]]:
    gaps = draw(st.lists(st.tuples(events, st.floats(min_value=0.0, max_value=20.0)), max_size=60))
    now, out = 0.0, []
    for event, gap in gaps:
        now += gap
        out.append((event, now))
    return out


@PROFILE
@given(configs, histories())
def test_invariants_hold_after_every_step(config: BreakerConfig, steps: list[tuple[BreakerEvent, float]]) -> None:
    state = BreakerState()
    for event, now in steps:
        before = state
        state, admitted = breaker_step(state, event, now, config)
        assert 0 <= state.probes <= config.half_open_probes
        assert (state.opened_at is None) == (state.state == "closed")
        if event in ("success", "failure"):
            assert all(t > now - config.window for t, _, _ in state.outcomes)
        assert len(state.outcomes) <= BUCKETS + 1  # bounded however many calls: no per-call history
        if admitted:
            assert event == "call" and state.state in ("closed", "half_open")
        if before.state == "open" and before.opened_at is not None and now < before.opened_at + config.open_for:
            assert state == before and not admitted  # nothing gets through, nothing changes, until open_for
        if state.state == "closed":
            assert state.consecutive_failures < config.consecutive_failures


@PROFILE
@given(configs, st.integers(min_value=0, max_value=30))
def test_consecutive_failures_open_it(config: BreakerConfig, successes: int) -> None:
    steps: list[tuple[BreakerEvent, float]] = [("success", 0.0)] * successes
    steps += [("failure", 0.0)] * config.consecutive_failures
    assert _run(steps, config)[-1][0].state == "open"


@PROFILE
@given(configs, st.floats(min_value=0.0, max_value=1000.0))
def test_a_probe_decides(config: BreakerConfig, later: float) -> None:
    opened = _run([("failure", 1.0)] * config.consecutive_failures, config)[-1][0]
    at = 1.0 + config.open_for + later
    probing, admitted = breaker_step(opened, "call", at, config)
    assert admitted and probing.state == "half_open"
    assert breaker_step(probing, "success", at, config)[0] == BreakerState()
    reopened = breaker_step(probing, "failure", at + 1.0, config)[0]
    assert reopened.state == "open" and reopened.opened_at == at + 1.0


def test_the_failure_rate_opens_it_only_past_min_calls() -> None:
    config = BreakerConfig(window=10.0, min_calls=4, failure_rate=0.5, consecutive_failures=100, open_for=5.0,
                           half_open_probes=1)
    three = _run([("failure", 0.0), ("success", 1.0), ("failure", 2.0)], config)
    assert three[-1][0].state == "closed"  # 2 of 3 failed, but fewer than min_calls
    four = _run([("failure", 0.0), ("success", 1.0), ("failure", 2.0), ("success", 3.0)], config)
    assert four[-1][0].state == "closed"  # a success never opens it
    five = _run([("failure", 0.0), ("success", 1.0), ("success", 2.0), ("failure", 3.0)], config)
    assert five[-1][0].state == "open"  # 2 of 4 = 0.5
    # The same outcomes spread over more than the window: the old ones have left it.
    spread = _run([("failure", 0.0), ("success", 1.0), ("success", 12.0), ("failure", 13.0)], config)
    assert spread[-1][0].state == "closed"


def test_probes_are_limited_and_abandoned_ones_free_their_slot() -> None:
    config = BreakerConfig(window=10.0, min_calls=10, failure_rate=1.0, consecutive_failures=1, open_for=5.0,
                           half_open_probes=2)
    states = _run([("failure", 0.0), ("call", 1.0), ("call", 5.0), ("call", 5.0), ("call", 5.0),
                   ("abandon", 6.0), ("call", 6.0)], config)
    assert [admitted for _, admitted in states] == [False, False, True, True, False, False, True]
    assert states[-1][0].state == "half_open" and states[-1][0].probes == 2


# -- the shell, under MockClock ----------------------------------------------------------------------------


async def _fail(breaker: CircuitBreaker) -> None:
    with pytest.raises(Boom):
        async with breaker.guard():
            raise Boom()


async def test_opens_after_five_then_one_probe_after_30_s(autojump_clock: trio.testing.MockClock) -> None:
    transitions: list[tuple[str, str, str, float]] = []
    breaker = CircuitBreaker("db", FIVE, on_transition=lambda *t: transitions.append(t))
    for _ in range(4):
        await _fail(breaker)
    assert breaker.snapshot().state == "closed" and breaker.snapshot().consecutive_failures == 4
    await _fail(breaker)
    snap = breaker.snapshot()
    assert (snap.state, snap.opened_at, snap.retry_after) == ("open", 0.0, 30.0)
    await trio.sleep(10.0)
    body_ran = False
    with pytest.raises(CircuitOpen) as refused:
        async with breaker.guard():
            body_ran = True
    assert not body_ran and refused.value.name == "db" and refused.value.retry_after == pytest.approx(20.0)
    await trio.sleep(20.0)
    assert breaker.snapshot().state == "half_open"
    entered = trio.Event()
    release = trio.Event()

    async def probe() -> None:
        async with breaker.guard():
            entered.set()
            await release.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(probe)
        await entered.wait()
        with pytest.raises(CircuitOpen):  # the one probe is in flight
            async with breaker.guard():
                pass
        release.set()
    assert breaker.snapshot().state == "closed"
    assert [(old, new, at) for _, old, new, at in transitions] == [
        ("closed", "open", 0.0), ("open", "half_open", 30.0), ("half_open", "closed", 30.0)]
    assert {name for name, *_ in transitions} == {"db"}


async def test_a_failed_probe_opens_it_again(autojump_clock: trio.testing.MockClock) -> None:
    breaker = CircuitBreaker("db", FIVE)
    for _ in range(5):
        await _fail(breaker)
    await trio.sleep(30.0)
    await _fail(breaker)  # the probe
    snap = breaker.snapshot()
    assert (snap.state, snap.opened_at, snap.retry_after) == ("open", 30.0, 30.0)
    await trio.sleep(29.0)
    assert not breaker.allow()


async def test_cancelled_is_not_a_failure(autojump_clock: trio.testing.MockClock) -> None:
    breaker = CircuitBreaker("db", FIVE)
    for _ in range(10):
        with trio.move_on_after(1.0):
            async with breaker.guard():
                await trio.sleep_forever()
    snap = breaker.snapshot()
    assert (snap.state, snap.consecutive_failures, snap.calls, snap.failures) == ("closed", 0, 0, 0)
    # ...and a cancelled probe frees its slot instead of holding the breaker half open forever.
    for _ in range(5):
        await _fail(breaker)
    await trio.sleep(30.0)
    with trio.move_on_after(1.0):
        async with breaker.guard():
            await trio.sleep_forever()
    assert breaker.snapshot().state == "half_open"
    async with breaker.guard():
        pass
    assert breaker.snapshot().state == "closed"


async def test_manual_calls_and_snapshot_counts(autojump_clock: trio.testing.MockClock) -> None:
    breaker = CircuitBreaker("api", FIVE)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.allow()
    breaker.record_failure()
    snap = breaker.snapshot()
    assert (snap.calls, snap.failures, snap.consecutive_failures) == (2, 1, 1)
    await trio.sleep(61.0)
    assert breaker.snapshot().calls == 0  # outcomes older than the window are not counted


def test_config_is_checked() -> None:
    with pytest.raises(ValueError):
        BreakerConfig(window=1.0, min_calls=1, failure_rate=1.5, consecutive_failures=1, open_for=1.0,
                      half_open_probes=1)
    with pytest.raises(ValueError):
        BreakerConfig(window=1.0, min_calls=1, failure_rate=0.5, consecutive_failures=0, open_for=1.0,
                      half_open_probes=1)
