"""Timers: send_after and every deliver through the mailbox at exact virtual times; cancelled with the actor."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from kernel import Actor, ChildSpec, Supervisor
from kernel.testing import inject_crash, open_test_system

from ._helpers import Log, settle, tasks_living, worker

W = "root/w"


def tree(log: Log, **spec: Any) -> Supervisor:
    return Supervisor("root", children=[worker("w", log, **spec)])


def arrivals(log: Log, msg: Any) -> list[float]:
    return [e.at for e in log.where(W, "recv") if e.msg == msg]


async def test_send_after_delivers_after_exactly_the_delay(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(tree(log)) as system:
        await trio.sleep(1)
        await system.ref(W).ask(("send_after", 2.5, "tick"))
        await trio.sleep(10)
        assert arrivals(log, "tick") == [3.5]


async def test_every_fires_one_interval_after_the_call_then_every_interval(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(tree(log)) as system:
        await trio.sleep(1)
        await system.ref(W).ask(("every", 2.0, "tick"))
        await trio.sleep_until(9.5)
        assert arrivals(log, "tick") == [3.0, 5.0, 7.0, 9.0]


async def test_timer_messages_queue_behind_what_is_already_in_the_mailbox(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(tree(log)) as system:
        ref = system.ref(W)
        await ref.ask(("send_after", 1.0, "tick"))
        await ref.tell(("sleep", 5))
        await ref.tell("queued first")
        await trio.sleep(10)
        assert log.received(W)[1:] == [("sleep", 5), "queued first", "tick"]
        assert arrivals(log, "tick") == [5.0]


async def test_timers_are_cancelled_when_the_actor_crashes(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(tree(log)) as system:
        ref = system.ref(W)
        await ref.ask(("every", 1.0, "tick"))
        await ref.ask(("send_after", 5.0, "once"))
        await trio.sleep_until(2.5)
        inject_crash(system, W)
        await trio.sleep(20)
        assert log.count(W, "started") == 2
        assert arrivals(log, "tick") == [1.0, 2.0]
        assert arrivals(log, "once") == []
        assert system.dead_letters.count == 0  # cancelled, not refused


async def test_timers_are_cancelled_when_the_actor_stops(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(tree(log, restart="transient")) as system:
        await settle()
        baseline = tasks_living()
        ref = system.ref(W)
        await ref.ask(("every", 1.0, "tick"))
        await ref.ask(("send_after", 3.0, "once"))
        await trio.sleep_until(1.5)
        await ref.tell(("stop",))
        await trio.sleep(20)
        assert arrivals(log, "tick") == [1.0]
        assert arrivals(log, "once") == []
        assert system.dead_letters.count == 0
        assert tasks_living() == baseline - 1  # the stopped actor's task is gone; no timer task was added


async def test_a_restarted_actor_rearms_its_own_timers_only(autojump_clock: Any) -> None:
    ticks: list[tuple[float, int]] = []

    class Ticker(Actor):
        incarnations = 0

        async def started(self) -> None:
            Ticker.incarnations += 1
            self.me = Ticker.incarnations
            self.every(1.0, "tick")

        async def receive(self, msg: Any) -> None:
            ticks.append((trio.current_time(), self.me))

    async with open_test_system(Supervisor("root", children=[ChildSpec("t", Ticker)])) as system:
        await trio.sleep_until(2.5)
        inject_crash(system, "root/t")
        await trio.sleep_until(5.0)
        await settle()
        # The first incarnation ticks at 1 and 2; the second, from 2.5, at 3.5 and 4.5. No doubles.
        assert ticks == [(1.0, 1), (2.0, 1), (3.5, 2), (4.5, 2)]


async def test_a_cancelled_timer_does_not_fire(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(tree(log)) as system:
        ref = system.ref(W)
        await ref.ask(("send_after", 2.0, "once"))
        await ref.ask(("every", 1.0, "tick"))
        await trio.sleep_until(1.5)
        await ref.ask(("cancel_timers",))
        await trio.sleep(10)
        assert arrivals(log, "tick") == [1.0]
        assert arrivals(log, "once") == []


async def test_a_timer_message_that_finds_the_mailbox_full_is_a_dead_letter(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(tree(log, mailbox=1)) as system:
        ref = system.ref(W)
        await ref.ask(("send_after", 1.0, "tick"))
        await ref.tell(("sleep", 5))
        await settle()
        await ref.tell("fills the mailbox")
        await trio.sleep(10)
        assert [(d.message, d.at) for d in system.dead_letters.recent] == [("tick", 1.0)]
        assert arrivals(log, "tick") == []


async def test_timer_arguments_are_validated(autojump_clock: Any) -> None:
    errors: list[str] = []

    class Bad(Actor):
        async def receive(self, msg: Any) -> None:
            for call in (lambda: self.every(0, "x"), lambda: self.every(-1, "x"),
                         lambda: self.send_after(-1, "x"), lambda: self.send_after(float("inf"), "x")):
                with pytest.raises(ValueError):
                    call()
                errors.append("ValueError")

    async with open_test_system(Supervisor("root", children=[ChildSpec("b", Bad)])) as system:
        await system.ref("root/b").ask("go")
        assert errors == ["ValueError"] * 4
