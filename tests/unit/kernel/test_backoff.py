"""Backoff: min(max_delay, base_delay * 2**n) x jitter in [0.8, 1.2], seeded; n resets after reset_after."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from kernel import Actor, ChildSpec, Restarted, Supervisor
from kernel.testing import inject_crash, open_test_system

from ._helpers import Boom, Log, settle, worker


class FailsToStart(Actor):
    """Crashes in started() while the shared countdown is positive."""

    def __init__(self, remaining: list[int], starts: list[float]) -> None:
        self.remaining = remaining
        self.starts = starts

    async def started(self) -> None:
        self.starts.append(trio.current_time())
        if self.remaining[0] > 0:
            self.remaining[0] -= 1
            raise Boom("not yet")

    async def receive(self, msg: Any) -> Any:
        return msg


def backoff_root(**kw: Any) -> Supervisor:
    params: dict[str, Any] = {"base_delay": 1.0, "max_delay": 5.0, "reset_after": 10.0,
                              "max_restarts": 1000, "within": 1000.0}
    params.update(kw)
    children = params.pop("children", [])
    return Supervisor("root", children=children, **params)


async def crash_streak(seed: int, crashes: int = 6) -> tuple[list[Restarted], list[float], float]:
    """Spawn an actor that fails to start ``crashes`` times; its restarts and start times (relative)."""
    starts: list[float] = []
    async with open_test_system(backoff_root(), seed=seed) as system:
        origin = trio.current_time()
        async with system.telemetry.subscribe() as sub:
            await system.spawn("root", ChildSpec("f", FailsToStart, args=([crashes], starts)))
            await trio.sleep(1000)
            events = system.telemetry.drain(sub)
    restarts = [e for e in events if isinstance(e, Restarted)]
    started = [e for e in events if e.kind == "started" and e.path == "root/f"]
    assert len(started) == 1 and started[0].attempt == crashes
    return restarts, [t - origin for t in starts], started[0].at - origin


async def test_delays_follow_the_formula_with_jitter_in_bounds(autojump_clock: Any) -> None:
    restarts, starts, up_at = await crash_streak(seed=11)
    assert [e.attempt for e in restarts] == [1, 2, 3, 4, 5, 6]
    caps = [min(5.0, 1.0 * 2**n) for n in range(6)]  # 1, 2, 4, 5, 5, 5
    ratios = [e.delay / cap for e, cap in zip(restarts, caps, strict=True)]
    assert all(0.8 <= r <= 1.2 for r in ratios), ratios
    assert len(set(ratios)) > 1  # jitter is applied, not a constant factor
    # Each restart happens exactly its delay after the crash that caused it.
    assert starts[0] == 0.0
    for k, event in enumerate(restarts):
        assert event.at == starts[k]
        assert starts[k + 1] == starts[k] + event.delay
    assert up_at == starts[-1]


async def test_the_same_seed_gives_the_same_delays_and_another_seed_different_ones(autojump_clock: Any) -> None:
    first, starts_1, _ = await crash_streak(seed=5)
    second, starts_2, _ = await crash_streak(seed=5)
    other, _, _ = await crash_streak(seed=6)
    assert [e.delay for e in first] == [e.delay for e in second]
    assert starts_1 == pytest.approx(starts_2, abs=1e-9)  # relative to two different origins
    assert [e.delay for e in first] != [e.delay for e in other]


async def test_max_delay_caps_the_exponential(autojump_clock: Any) -> None:
    restarts, _, _ = await crash_streak(seed=3, crashes=12)
    assert all(e.delay <= 5.0 * 1.2 for e in restarts)
    assert all(5.0 * 0.8 <= e.delay for e in restarts[3:])


async def test_consecutive_count_resets_after_the_child_ran_reset_after_seconds(autojump_clock: Any) -> None:
    log = Log()
    tree = backoff_root(base_delay=1.0, max_delay=1000.0, reset_after=10.0, children=[worker("w", log)])
    async with open_test_system(tree, seed=2) as system:
        await settle()
        async with system.telemetry.subscribe(kinds=["restarted"]) as sub:

            async def crash_after(run_for: float) -> Restarted:
                await trio.sleep(run_for)
                crashed_at = trio.current_time()
                inject_crash(system, "root/w")
                event = await sub.__anext__()
                assert isinstance(event, Restarted) and event.at == crashed_at
                await trio.sleep(event.delay)
                await settle()
                assert log.times("root/w", "started")[-1] == crashed_at + event.delay
                return event

            streak = [await crash_after(0.0) for _ in range(3)]
            assert [e.attempt for e in streak] == [1, 2, 3]
            caps = [1.0, 2.0, 4.0]
            assert all(0.8 * c <= e.delay <= 1.2 * c for e, c in zip(streak, caps, strict=True))
            after_long_run = await crash_after(10.5)  # ran past reset_after: the streak is over
            assert after_long_run.attempt == 1
            assert 0.8 <= after_long_run.delay <= 1.2
            second = await crash_after(0.0)
            after_short_run = await crash_after(9.5)  # not long enough: the streak goes on
            assert (second.attempt, after_short_run.attempt) == (2, 3)
            assert 4 * 0.8 <= after_short_run.delay <= 4 * 1.2


async def test_the_streak_resets_exactly_at_reset_after(autojump_clock: Any) -> None:
    # base_delay 0 keeps every instant exact; the attempt number still shows the streak.
    log = Log()
    tree = backoff_root(base_delay=0.0, reset_after=10.0, children=[worker("w", log)])
    async with open_test_system(tree) as system:
        await settle()
        async with system.telemetry.subscribe(kinds=["restarted"]) as sub:
            for t in (0.0, 0.0, 0.0, 9.75, 19.75, 29.75):  # binary-exact instants
                await trio.sleep_until(t)
                await settle()
                inject_crash(system, "root/w")
                await settle()
            events = system.telemetry.drain(sub)
        # Runs before each crash: 0, 0, 0, 9.75 (< 10), 10.0 (reset), 10.0 (reset).
        assert [(e.at, e.attempt) for e in events] == [
            (0.0, 1), (0.0, 2), (0.0, 3), (9.75, 4), (19.75, 1), (29.75, 1),
        ]
        assert all(e.delay == 0.0 for e in events)


async def test_tells_during_backoff_queue_and_are_handled_after_the_restart(autojump_clock: Any) -> None:
    log = Log()
    tree = backoff_root(base_delay=2.0, children=[worker("w", log)])
    async with open_test_system(tree, seed=4) as system:
        await settle()
        ref = system.ref("root/w")
        async with system.telemetry.subscribe(kinds=["restarted"]) as sub:
            await ref.tell(("crash", "x"))
            restarted = await sub.__anext__()
        delay = restarted.delay
        assert delay is not None and 1.6 <= delay <= 2.4
        await trio.sleep(0.5)
        assert system.tree().children[0].state == "restarting"
        for i in range(5):
            await ref.tell(f"m{i}")
        assert system.tree().children[0].mailbox.depth == 5
        assert await ref.ask("q", timeout=10.0) == ("ok", "q")
        assert trio.current_time() == delay
        assert [(e.at, e.msg) for e in log.where("root/w", "recv")][1:] == [
            (delay, "m0"), (delay, "m1"), (delay, "m2"), (delay, "m3"), (delay, "m4"), (delay, "q"),
        ]
        assert system.dead_letters.count == 1  # only the crashing message


async def test_an_ask_shorter_than_the_backoff_times_out_and_loses_nothing_else(autojump_clock: Any) -> None:
    log = Log()
    tree = backoff_root(base_delay=10.0, max_delay=10.0, children=[worker("w", log)])
    async with open_test_system(tree, seed=1) as system:
        await settle()
        ref = system.ref("root/w")
        await ref.tell(("crash", "x"))
        await ref.tell("kept")
        with pytest.raises(Exception) as info:
            await ref.ask("too impatient", timeout=1.0)
        assert type(info.value).__name__ == "AskTimeout"
        await trio.sleep(20)
        assert log.received("root/w")[1:] == ["kept", "too impatient"]


@pytest.mark.parametrize("strategy", ["one_for_all", "rest_for_one"])
async def test_a_group_restart_waits_the_crashed_childs_delay(autojump_clock: Any, strategy: str) -> None:
    log = Log()
    tree = backoff_root(strategy=strategy, base_delay=3.0, max_delay=30.0, children=[
        worker("a", log), worker("b", log),
    ])
    async with open_test_system(tree, seed=9) as system:
        await settle()
        async with system.telemetry.subscribe(kinds=["restarted"]) as sub:
            # A first crash of a, then a second one once it is back: its delay is now base * 2.
            inject_crash(system, "root/a")
            await settle()
            first = system.telemetry.drain(sub)
            await trio.sleep(first[0].delay)
            await settle()
            crashed_at = trio.current_time()
            inject_crash(system, "root/a")
            await settle()
            second = system.telemetry.drain(sub)
        assert [(e.path, e.attempt) for e in second] == [("root/a", 2), ("root/b", 2)]
        delay = second[0].delay
        assert 6 * 0.8 <= delay <= 6 * 1.2
        assert second[1].delay == delay  # b (which never crashed) waits a's delay
        await trio.sleep(delay)
        await settle()
        assert log.times("root/a", "started")[-1] == crashed_at + delay
        assert log.times("root/b", "started")[-1] == crashed_at + delay
        assert [log.count(p, "started") for p in ("root/a", "root/b")] == [3, 3]


async def test_zero_base_delay_restarts_at_once(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", children=[worker("w", log)])  # base_delay defaults to 0
    async with open_test_system(tree) as system:
        await trio.sleep(7)
        async with system.telemetry.subscribe(kinds=["restarted"]) as sub:
            inject_crash(system, "root/w")
            await settle()
            (event,) = system.telemetry.drain(sub)
        assert (event.attempt, event.delay, event.at) == (1, 0.0, 7.0)
        assert log.times("root/w", "started") == [0.0, 7.0]
