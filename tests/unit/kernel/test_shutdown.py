"""Shutdown: reverse start order, draining within shutdown_timeout, then cancel; nothing hangs."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from kernel import ActorStopped, Supervisor
from kernel.testing import inject_crash, open_test_system

from ._helpers import Log, settle, worker


async def test_children_stop_in_reverse_start_order(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", children=[
        worker("a", log),
        worker("b", log),
        Supervisor("sub", children=[worker("d", log), worker("e", log)]),
        worker("c", log),
    ])
    async with open_test_system(tree) as system:
        await settle()
        await system.spawn("root", worker("f", log))
        await settle()
    stops = [e.path for e in log.where(event="stopping")]
    assert stops == ["root/f", "root/c", "root/sub/e", "root/sub/d", "root/b", "root/a"]


async def test_each_child_drains_its_mailbox_before_it_stops(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", children=[worker("a", log), worker("b", log)])
    async with open_test_system(tree) as system:
        for i in range(3):
            await system.ref("root/a").tell(("sleep", 1, f"a{i}"))
            await system.ref("root/b").tell(("sleep", 1, f"b{i}"))
    # Both keep working while the stop goes through them (b first, then a): all six are handled.
    assert trio.current_time() == 3.0
    assert [e.msg[2] for e in log.where("root/a", "done")] == ["a0", "a1", "a2"]
    assert [e.msg[2] for e in log.where("root/b", "done")] == ["b0", "b1", "b2"]
    assert [(e.at, e.path) for e in log.where(event="stopping")] == [(3.0, "root/b"), (3.0, "root/a")]
    assert system.dead_letters.count == 0


async def test_draining_is_sequential_in_reverse_order(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", children=[worker("a", log), worker("b", log)])
    async with open_test_system(tree) as system:
        a, b = system.ref("root/a"), system.ref("root/b")
        await a.tell(("sleep", 2))
        await settle()
        for i in range(3):
            await a.tell(i)
            await b.tell(i)
    # b drains (instantly), then a finishes its sleep and its queue; stopping() marks each end.
    assert [(e.at, e.path) for e in log.where(event="stopping")] == [(0.0, "root/b"), (2.0, "root/a")]
    assert log.received("root/a") == [("sleep", 2), 0, 1, 2]
    assert log.received("root/b") == [0, 1, 2]
    assert system.dead_letters.count == 0


async def test_a_child_that_does_not_drain_in_time_is_cancelled(autojump_clock: Any) -> None:
    log = Log()
    results: list[tuple[str, float]] = []
    tree = Supervisor("root", children=[worker("a", log), worker("slow", log, shutdown_timeout=2.0)])
    async with trio.open_nursery() as outside:
        async with open_test_system(tree) as system:
            slow = system.ref("root/slow")
            await slow.tell(("sleep", 100))
            await settle()
            await slow.tell("queued")

            async def ask() -> None:
                try:
                    await slow.ask("pending ask", timeout=1000)
                except ActorStopped:
                    results.append(("ActorStopped", trio.current_time()))

            outside.start_soon(ask)
            await settle()
        assert trio.current_time() == 2.0
    assert results == [("ActorStopped", 2.0)]
    assert [e.event for e in log.where("root/slow")] == ["started", "recv"]  # no "done", no stopping()
    assert [(e.path, e.event, e.at) for e in log.where("root/a", "stopping")] == [("root/a", "stopping", 2.0)]
    letters = [(d.message, d.at) for d in system.dead_letters.recent]
    assert letters == [(("sleep", 100), 2.0), ("queued", 2.0), ("pending ask", 2.0)]


async def test_shutdown_with_a_full_mailbox_and_blocked_senders(autojump_clock: Any) -> None:
    log = Log()
    sent: dict[str, Any] = {}
    tree = Supervisor("root", children=[worker("w", log, mailbox=1, overflow="block", shutdown_timeout=2.5)])
    async with trio.open_nursery() as outside:
        async with open_test_system(tree) as system:
            ref = system.ref("root/w")
            await ref.tell(("sleep", 1, "gate"))
            await settle()
            await ref.tell(("sleep", 1, "q1"))  # the mailbox is now full

            async def send(name: str) -> None:
                try:
                    await ref.tell(("sleep", 1, name))
                    sent[name] = ("sent", trio.current_time())
                except ActorStopped:
                    sent[name] = ("ActorStopped", trio.current_time())

            for name in ("s1", "s2", "s3"):
                outside.start_soon(send, name)
                await settle()
        assert trio.current_time() == 2.5
    # Drain: gate 0-1, q1 1-2, s1 from 2 until cancelled at 2.5. s1 and s2 got in as room appeared;
    # s3 was still waiting for room when the actor stopped: it is told so, it does not hang.
    assert sent == {"s1": ("sent", 1.0), "s2": ("sent", 2.0), "s3": ("ActorStopped", 2.5)}
    assert [e.msg[2] for e in log.where("root/w", "done")] == ["gate", "q1"]
    assert [d.message[2] for d in system.dead_letters.recent] == ["s1", "s2", "s3"]


async def test_pending_asks_of_a_stopped_actor_get_actor_stopped(autojump_clock: Any) -> None:
    log = Log()
    results: list[tuple[str, str, float]] = []
    tree = Supervisor("root", children=[worker("w", log, restart="transient")])
    async with open_test_system(tree) as system:
        ref = system.ref("root/w")
        await ref.tell(("sleep", 1))
        await ref.tell(("stop",))

        async def ask(name: str) -> None:
            try:
                await ref.ask(name, timeout=1000)
                results.append((name, "answered", trio.current_time()))
            except ActorStopped:
                results.append((name, "ActorStopped", trio.current_time()))

        async with trio.open_nursery() as nursery:
            for name in ("q1", "q2", "q3"):
                nursery.start_soon(ask, name)
                await settle()
    assert sorted(results) == [("q1", "ActorStopped", 1.0), ("q2", "ActorStopped", 1.0),
                               ("q3", "ActorStopped", 1.0)]


async def test_system_stop_is_graceful_and_idempotent(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", children=[worker("w", log)])
    async with open_test_system(tree) as system:
        ref = system.ref("root/w")
        await ref.tell(("sleep", 1))
        await system.stop()
        assert trio.current_time() == 1.0
        assert log.lifecycle() == [("root/w", "started"), ("root/w", "stopping")]
        assert system.tree().state == "stopped"
        assert system.tree().children[0].state == "stopped"
        with pytest.raises(ActorStopped):
            await ref.tell("after stop")
        await system.stop()
    assert log.count("root/w", "stopping") == 1


async def test_the_shutdown_timeout_bounds_each_child_separately(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", children=[
        worker("a", log, shutdown_timeout=1.0),
        worker("b", log, shutdown_timeout=3.0),
    ])
    async with open_test_system(tree) as system:
        await system.ref("root/a").tell(("sleep", 50))
        await system.ref("root/b").tell(("sleep", 50))
        await settle()
    # b first (cancelled at 3), then a, whose 1 s starts only then (cancelled at 4).
    assert trio.current_time() == 4.0
    assert [(d.path, d.at) for d in system.dead_letters.recent] == [("root/b", 3.0), ("root/a", 4.0)]


# -- regressions: found in review ---------------------------------------------------------------------
async def test_a_draining_stop_during_a_restart_delay_still_drains_the_mailbox(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", base_delay=0.5, children=[worker("w", log, shutdown_timeout=5.0)])
    async with open_test_system(tree) as system:
        ref = system.ref("root/w")
        await ref.tell(("crash", "x"))
        await settle()  # crashed: now waiting out its 0.4-0.6 s restart delay
        for m in ("m0", "m1", "m2"):
            await ref.tell(m)
    assert [m for m in log.received("root/w") if isinstance(m, str)] == ["m0", "m1", "m2"]


async def test_a_stop_left_over_from_a_cancelled_incarnation_does_not_end_the_next(autojump_clock: Any) -> None:
    log = Log()
    sub = Supervisor("sub", max_restarts=0, children=[
        worker("a", log, restart="transient", shutdown_timeout=1.0), worker("b", log),
    ])
    async with open_test_system(Supervisor("root", children=[sub])) as system:
        a = system.ref("root/sub/a")
        await a.tell(("sleep", 10))  # busy when its supervisor gives up: stopped, then cancelled
        await settle()
        inject_crash(system, "root/sub/b")  # sub gives up; root restarts it
        await trio.sleep(5)
        assert await a.ask("ping") == ("ok", "ping")  # the restarted `a` runs, it was not retired
        assert log.count("root/sub/a", "started") == 2
