"""Lifecycle hooks: started() every incarnation; stopping() only on a graceful way out."""

from __future__ import annotations

from typing import Any

import trio

from kernel import Actor, ChildSpec, Supervisor
from kernel.testing import inject_crash, open_test_system

from ._helpers import Log, settle, worker

W = "root/w"


async def test_started_runs_before_the_first_message_of_every_incarnation(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(Supervisor("root", children=[worker("w", log)])) as system:
        ref = system.ref(W)
        await ref.tell("m1")
        await ref.tell(("crash", "x"))
        await ref.tell("m2")
        await settle()
        inject_crash(system, W)  # between two messages
        await ref.tell("m3")
        await ref.ask("sync")
        assert [(e.event, e.msg) for e in log.where(W) if e.event in ("started", "recv", "stopping")] == [
            ("started", None), ("recv", "m1"), ("recv", ("crash", "x")),
            ("started", None), ("recv", "m2"),
            ("started", None), ("recv", "m3"), ("recv", "sync"),
        ]


async def test_self_ref_is_usable_in_started(autojump_clock: Any) -> None:
    seen: list[str] = []

    class SelfTeller(Actor):
        async def started(self) -> None:
            await self.ref.tell("hello from started")

        async def receive(self, msg: Any) -> None:
            seen.append(msg)

    async with open_test_system(Supervisor("root", children=[ChildSpec("s", SelfTeller)])) as system:
        await settle()
        assert seen == ["hello from started"]
        assert system.ref("root/s").path == "root/s"


async def test_stopping_runs_on_a_graceful_system_stop(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(Supervisor("root", children=[worker("w", log)])) as system:
        await system.ref(W).ask("x")
    assert log.lifecycle(W) == [(W, "started"), (W, "stopping")]


async def test_stopping_runs_after_self_stop_once_the_current_message_is_done(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", children=[worker("w", log, restart="transient")])
    async with open_test_system(tree) as system:
        await system.ref(W).ask(("stop",))
        await settle()
        assert [e.event for e in log.where(W)] == ["started", "recv", "stopping"]
        assert system.tree().children[0].state == "stopped"


async def test_stopping_does_not_run_after_a_crash(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(Supervisor("root", children=[worker("w", log)])) as system:
        await system.ref(W).tell(("crash", "x"))
        inject_crash(system, W)
        await settle()
        assert log.count(W, "started") == 3
        assert log.count(W, "stopping") == 0


async def test_stopping_does_not_run_after_a_forced_cancel(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", children=[worker("w", log, shutdown_timeout=1.0)])
    async with open_test_system(tree) as system:
        await system.ref(W).tell(("sleep", 50))
        await settle()
    assert trio.current_time() == 1.0  # cancelled once its shutdown timeout ran out
    assert [e.event for e in log.where(W)] == ["started", "recv"]


async def test_a_crash_in_started_restarts_the_actor(autojump_clock: Any) -> None:
    attempts: list[float] = []

    class Flaky(Actor):
        async def started(self) -> None:
            attempts.append(trio.current_time())
            if len(attempts) < 3:
                raise RuntimeError("not yet")

        async def receive(self, msg: Any) -> Any:
            return msg

    tree = Supervisor("root", children=[ChildSpec("f", Flaky)])
    async with open_test_system(tree) as system:
        assert await system.ref("root/f").ask("up?") == "up?"
        assert len(attempts) == 3
        node = system.tree().children[0]
        assert (node.restarts, node.last_failure.type) == (2, "RuntimeError")


async def test_self_stop_inside_started_is_a_normal_exit_with_stopping(autojump_clock: Any) -> None:
    steps: list[str] = []

    class QuitsAtOnce(Actor):
        async def started(self) -> None:
            self.stop()
            await trio.sleep(1)  # started() may still finish its own work
            steps.append("started finished")

        async def stopping(self) -> None:
            steps.append("stopping")

        async def receive(self, msg: Any) -> None:
            steps.append(f"recv {msg}")

    tree = Supervisor("root", children=[ChildSpec("q", QuitsAtOnce, restart="transient")])
    async with open_test_system(tree) as system:
        await trio.sleep(5)
        assert steps == ["started finished", "stopping"]
        assert system.tree().children[0].state == "stopped"
