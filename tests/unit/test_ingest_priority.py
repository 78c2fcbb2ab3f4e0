"""The foreground/background order of the ingest lanes: the pure decision, then its trio shell
under the mock clock."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from actors.ingest import LanePriority, PriorityConfig, background_wait


@pytest.mark.parametrize(("active", "quiet_until", "since", "now", "expected"), [
    (0, -math.inf, 0.0, 0.0, 0.0),  # nothing ever in the foreground: go
    (0, 5.0, 0.0, 4.0, 1.0),  # the quiet period after the last foreground request
    (0, 5.0, 0.0, 5.0, 0.0),  # ... and its end
    (1, -math.inf, 0.0, 1.0, 9.0),  # foreground in flight: until starved (the shell wakes earlier)
    (1, -math.inf, 0.0, 10.0, 0.0),  # starved: go anyway
    (0, 50.0, 0.0, 4.0, 6.0),  # a quiet period past the starvation bound ends at the bound
])
def test_background_wait(active: int, quiet_until: float, since: float, now: float, expected: float) -> None:
    assert background_wait(active=active, quiet_until=quiet_until, waiting_since=since, now=now,
                           max_wait=10.0) == expected


@pytest.mark.parametrize(("since", "last_starved", "now", "expected"), [
    (0.0, -math.inf, 10.0, 0.0),  # nobody went by starvation yet: the unit's own bound
    (0.0, 5.0, 10.0, 5.0),  # another unit went at 5: this one waits until 15
    (0.0, 5.0, 15.0, 0.0),
    (8.0, 5.0, 15.0, 3.0),  # its own bound (18) is the later one
])
def test_starvation_passes_are_rationed_across_units(since: float, last_starved: float, now: float,
                                                     expected: float) -> None:
    assert background_wait(active=1, quiet_until=-math.inf, waiting_since=since, now=now, max_wait=10.0,
                           last_starved=last_starved) == expected


def test_config_refuses_negative_times() -> None:
    with pytest.raises(ValueError, match="quiet and max_wait"):
        PriorityConfig(quiet=-1)
    with pytest.raises(ValueError, match="quiet and max_wait"):
        PriorityConfig(max_wait=-0.5)


async def take_turn(gate: LanePriority, went: list[float]) -> None:
    await gate.background_turn()
    went.append(trio.current_time())


async def test_background_goes_at_once_when_nothing_is_in_the_foreground(
        autojump_clock: trio.testing.MockClock) -> None:
    gate = LanePriority(PriorityConfig(quiet=0.01, max_wait=10.0))
    began = trio.current_time()
    await gate.background_turn()
    assert trio.current_time() == began and gate.starved_turns == 0


async def test_background_waits_for_the_foreground_then_the_quiet_period(
        autojump_clock: trio.testing.MockClock) -> None:
    gate = LanePriority(PriorityConfig(quiet=0.5, max_wait=100.0))
    went: list[float] = []
    async with trio.open_nursery() as nursery:
        with gate.foreground():
            nursery.start_soon(take_turn, gate, went)
            await trio.sleep(3.0)
            assert went == [] and gate.foreground_active == 1
        ended = trio.current_time()
    assert went == [ended + 0.5] and gate.starved_turns == 0


async def test_a_new_foreground_request_in_the_quiet_period_holds_background_again(
        autojump_clock: trio.testing.MockClock) -> None:
    gate = LanePriority(PriorityConfig(quiet=1.0, max_wait=100.0))
    went: list[float] = []
    async with trio.open_nursery() as nursery:
        with gate.foreground():
            nursery.start_soon(take_turn, gate, went)
            await trio.sleep(1.0)
        await trio.sleep(0.5)  # inside the quiet period
        with gate.foreground():
            await trio.sleep(2.0)
        ended = trio.current_time()
    assert went == [ended + 1.0]


async def test_overlapping_foreground_requests_count_until_the_last_ends(
        autojump_clock: trio.testing.MockClock) -> None:
    gate = LanePriority(PriorityConfig(quiet=0.0, max_wait=100.0))
    went: list[float] = []

    async def foreground(duration: float) -> None:
        with gate.foreground():
            await trio.sleep(duration)

    async def background() -> None:
        await trio.sleep(0.1)
        await gate.background_turn()
        went.append(trio.current_time())

    began = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(foreground, 1.0)
        nursery.start_soon(foreground, 4.0)
        nursery.start_soon(background)
    assert went == [began + 4.0] and gate.foreground_active == 0


async def test_a_foreground_that_never_ends_delays_background_by_max_wait_only(
        autojump_clock: trio.testing.MockClock) -> None:
    gate = LanePriority(PriorityConfig(quiet=0.01, max_wait=2.0))
    with gate.foreground():
        began = trio.current_time()
        await gate.background_turn()
        assert trio.current_time() == began + 2.0 and gate.starved_turns == 1
        await gate.background_turn()  # each unit waits its own bound
        assert trio.current_time() == began + 4.0 and gate.starved_turns == 2


async def test_units_that_waited_together_break_in_one_per_max_wait(autojump_clock: trio.testing.MockClock) -> None:
    """Many backfill units queued at once under a steady foreground: one goes per max_wait, not all at once
    (a burst of them would each hold the single database writer a hot request then waits behind)."""
    gate = LanePriority(PriorityConfig(quiet=0.01, max_wait=2.0))
    went: list[float] = []
    with gate.foreground():
        began = trio.current_time()
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(take_turn, gate, went)
    assert [t - began for t in went] == [2.0, 4.0, 6.0, 8.0] and gate.starved_turns == 4


async def test_a_failed_foreground_request_still_ends_its_turn(autojump_clock: trio.testing.MockClock) -> None:
    gate = LanePriority(PriorityConfig(quiet=0.0, max_wait=100.0))
    with pytest.raises(RuntimeError), gate.foreground():
        raise RuntimeError("the handler failed")
    assert gate.foreground_active == 0
    began = trio.current_time()
    await gate.background_turn()
    assert trio.current_time() == began


async def test_background_cpu_runs_one_unit_at_a_time(autojump_clock: trio.testing.MockClock) -> None:
    gate = LanePriority(PriorityConfig(quiet=0.0, max_wait=100.0))
    inside = 0
    most = 0

    async def unit() -> None:
        nonlocal inside, most
        async with gate.background_cpu():
            inside += 1
            most = max(most, inside)
            await trio.sleep(1.0)
            inside -= 1

    began = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(unit)
    assert most == 1 and trio.current_time() == began + 3.0


async def test_a_cancelled_background_wait_raises_cancelled(autojump_clock: trio.testing.MockClock) -> None:
    gate = LanePriority(PriorityConfig(quiet=0.0, max_wait=100.0))
    with gate.foreground():
        with trio.move_on_after(1.0) as scope:
            await gate.background_turn()
        assert scope.cancelled_caught and gate.starved_turns == 0
