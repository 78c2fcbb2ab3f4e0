"""Structured concurrency: no task outlives the system, no thread, and Cancelled is never swallowed."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import trio

from kernel import ActorStopped, AskTimeout, ChildSpec, Supervisor, SupervisorGaveUp
from kernel.testing import inject_crash, open_test_system

from ._helpers import Device, Log, settle, tasks_living, worker


def busy_tree(log: Log) -> Supervisor:
    return Supervisor("root", max_restarts=0, children=[
        worker("a", log, mailbox=1, overflow="block"),
        Supervisor("sub", max_restarts=0, children=[worker("b", log), worker("c", log)]),
        ChildSpec("devices", Device, kwargs={"log": log}, keyed=True),
    ])


async def make_busy(system: Any, nursery: trio.Nursery) -> None:
    """Timers, a blocked sender, a live keyed actor mid-message, a nested actor mid-sleep."""
    a = system.ref("root/a")
    await a.tell(("every", 1.0, "tick"))
    await a.tell(("send_after", 50.0, "later"))
    await a.tell(("sleep", 30))
    await settle()

    async def send(msg: str) -> None:
        try:
            await a.tell(msg)
        except ActorStopped:
            pass  # a blocked sender is told when the actor stops for good (tested elsewhere)

    nursery.start_soon(send, "fills")
    nursery.start_soon(send, "blocked")
    await system.ref("root/sub/b").tell(("sleep", 30))
    await system.ref("root/devices").key("k1").tell(("sleep", 30))
    await system.ref("root/devices").key("k2").tell("idle soon")
    await settle()


async def test_no_task_outlives_a_graceful_stop(autojump_clock: Any) -> None:
    baseline = tasks_living()
    threads = threading.active_count()
    log = Log()
    async with open_test_system(busy_tree(log)) as system:
        async with trio.open_nursery() as nursery:
            await make_busy(system, nursery)
            assert tasks_living() > baseline
            assert threading.active_count() == threads  # the kernel starts no thread
    assert tasks_living() == baseline
    assert threading.active_count() == threads


async def test_no_task_outlives_a_give_up(autojump_clock: Any) -> None:
    baseline = tasks_living()
    log = Log()
    with pytest.raises(SupervisorGaveUp):
        async with open_test_system(busy_tree(log)) as system:
            async with trio.open_nursery() as nursery:
                await make_busy(system, nursery)
                inject_crash(system, "root/sub/c")  # sub gives up, then the root does
                await trio.sleep(10_000)
    # Each busy child had its default 5 s shutdown timeout: sub/b, then devices, then a.
    assert trio.current_time() == 15.0
    assert tasks_living() == baseline


async def test_cancelling_the_enclosing_scope_ends_the_system_promptly(autojump_clock: Any) -> None:
    baseline = tasks_living()
    log = Log()
    answers: list[tuple[str, float]] = []
    async with trio.open_nursery() as outside:
        with trio.move_on_after(3.0) as scope:
            async with open_test_system(busy_tree(log)) as system:
                async with trio.open_nursery() as nursery:
                    await make_busy(system, nursery)
                    b = system.ref("root/sub/b")

                    async def ask_b() -> None:
                        try:
                            await b.ask("queued", timeout=1000)
                        except ActorStopped:
                            answers.append(("ActorStopped", trio.current_time()))

                    outside.start_soon(ask_b)
                    await trio.sleep_forever()
        assert scope.cancelled_caught
        assert trio.current_time() == 3.0  # not after the 30 s sleeps, nor after any shutdown timeout
    assert answers == [("ActorStopped", 3.0)]  # torn down: what was queued fails, nothing hangs
    assert log.count("root/a", "stopping") == 0  # a forced cancel runs no stopping()
    assert tasks_living() == baseline


async def test_cancelling_during_a_graceful_drain_is_still_prompt(autojump_clock: Any) -> None:
    baseline = tasks_living()
    log = Log()
    tree = Supervisor("root", children=[worker("w", log, shutdown_timeout=1000.0)])
    with trio.move_on_after(1.0) as scope:
        async with open_test_system(tree) as system:
            await system.ref("root/w").tell(("sleep", 100))
        # Leaving the block drains (up to 1000 s); the outer deadline interrupts that.
    assert scope.cancelled_caught
    assert trio.current_time() == 1.0
    assert tasks_living() == baseline


async def test_an_ask_in_a_cancelled_scope_is_cancelled_not_timed_out(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(Supervisor("root", children=[worker("w", log)])) as system:
        ref = system.ref("root/w")
        with trio.move_on_after(1.0) as scope:
            try:
                await ref.ask(("sleep", 10), timeout=5.0)
            except AskTimeout:  # pragma: no cover - that would be the bug
                pytest.fail("the outer cancellation was turned into AskTimeout")
        assert scope.cancelled_caught and trio.current_time() == 1.0
        assert await ref.ask("still fine", timeout=20.0) == ("ok", "still fine")
        assert trio.current_time() == 10.0


async def test_an_actor_cancelled_by_the_outer_scope_does_not_swallow_it(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", children=[worker("w", log)])
    with trio.move_on_after(2.0) as scope:
        async with open_test_system(tree) as system:
            await system.ref("root/w").tell(("sleep", 100))
            await trio.sleep_forever()
    assert scope.cancelled_caught and trio.current_time() == 2.0
    assert log.count("root/w", "started") == 1  # cancellation was not taken for a crash to restart


async def test_an_error_in_the_block_propagates_and_tears_the_system_down(autojump_clock: Any) -> None:
    baseline = tasks_living()
    log = Log()
    with pytest.raises(ValueError, match="user error"):
        async with open_test_system(Supervisor("root", children=[worker("w", log)])) as system:
            await system.ref("root/w").tell(("sleep", 100))
            await settle()
            raise ValueError("user error")
    assert trio.current_time() == 0.0
    assert tasks_living() == baseline
