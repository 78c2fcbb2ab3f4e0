"""Crashes, restart types, strategies, nested supervisors and run-time spawns."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from kernel import ActorStopped, ChildSpec, NoSuchActor, Supervisor
from kernel.testing import inject_crash, open_test_system

from ._helpers import Log, Worker, settle, worker


async def test_the_crashing_message_is_not_redelivered_and_is_a_dead_letter(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", children=[worker("w", log)])
    async with open_test_system(tree) as system:
        ref = system.ref("root/w")
        await trio.sleep(2)
        await ref.tell(("crash", "bad"))
        await ref.tell("after")
        await ref.ask("sync")
        assert log.received("root/w") == [("crash", "bad"), "after", "sync"]
        assert log.count("root/w", "started") == 2
        assert system.dead_letters.count == 1
        letter = system.dead_letters.recent[-1]
        assert (letter.path, letter.message, letter.error_type, letter.error_message, letter.at) == (
            "root/w", ("crash", "bad"), "Boom", "bad", 2.0,
        )


@pytest.mark.parametrize(
    ("restart", "exit_by", "restarted"),
    [
        ("permanent", "crash", True),
        ("permanent", "stop", True),
        ("transient", "crash", True),
        ("transient", "stop", False),
        ("temporary", "crash", False),
        ("temporary", "stop", False),
    ],
)
async def test_restart_types(autojump_clock: Any, restart: str, exit_by: str, restarted: bool) -> None:
    log = Log()
    tree = Supervisor("root", children=[worker("w", log, restart=restart), worker("other", log)])
    async with open_test_system(tree) as system:
        ref = system.ref("root/w")
        await settle()
        await ref.tell(("crash", "x") if exit_by == "crash" else ("stop",))
        await settle()
        node = system.tree().children[0]
        if restarted:
            assert log.count("root/w", "started") == 2
            assert (node.state, node.restarts) == ("running", 1)
            assert await ref.ask("still here") == ("ok", "still here")
        else:
            assert log.count("root/w", "started") == 1
            assert (node.state, node.restarts) == ("stopped", 0)
            with pytest.raises(ActorStopped):
                await ref.tell("anyone?")
        # A sibling is never affected by a one_for_one decision.
        assert log.count("root/other", "started") == 1
        assert system.tree().state == "running"


async def test_one_for_one_restarts_only_the_crashed_child(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", strategy="one_for_one", children=[worker(n, log) for n in "abc"])
    async with open_test_system(tree) as system:
        await settle()
        inject_crash(system, "root/b")
        await settle()
        assert [log.count(f"root/{n}", "started") for n in "abc"] == [1, 2, 1]
        assert [c.restarts for c in system.tree().children] == [0, 1, 0]


async def test_one_for_all_restarts_every_child_and_keeps_their_queued_messages(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", strategy="one_for_all", children=[worker(n, log) for n in "abc"])
    async with open_test_system(tree) as system:
        await settle()
        a = system.ref("root/a")
        await a.tell(("sleep", 2))
        await settle()
        await a.tell("queued-for-a")  # waits behind the sleep when b crashes
        inject_crash(system, "root/b")
        await trio.sleep(10)
        assert [log.count(f"root/{n}", "started") for n in "abc"] == [2, 2, 2]
        assert [c.restarts for c in system.tree().children] == [1, 1, 1]
        # a's queued message survived and went to a's new incarnation, exactly once.
        assert log.received("root/a").count("queued-for-a") == 1
        second_start = log.times("root/a", "started")[1]
        assert [e.at for e in log.where("root/a", "recv") if e.msg == "queued-for-a"] == [second_start]
        assert all(c.state == "running" for c in system.tree().children)


async def test_rest_for_one_restarts_the_crashed_child_and_those_started_after_it(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", strategy="rest_for_one", children=[worker(n, log) for n in "abcd"])
    async with open_test_system(tree) as system:
        await settle()
        inject_crash(system, "root/b")
        await settle()
        assert [log.count(f"root/{n}", "started") for n in "abcd"] == [1, 2, 2, 2]
        inject_crash(system, "root/d")
        await settle()
        assert [log.count(f"root/{n}", "started") for n in "abcd"] == [1, 2, 2, 3]
        assert [c.restarts for c in system.tree().children] == [0, 1, 1, 2]


async def test_a_supervisor_nested_as_a_child(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", strategy="one_for_all", children=[
        worker("z", log),
        Supervisor("sub", strategy="one_for_one", children=[worker("x", log), worker("y", log)]),
    ])
    async with open_test_system(tree) as system:
        await settle()
        assert await system.ref("root/sub/x").ask("hi") == ("ok", "hi")
        inject_crash(system, "root/sub/x")
        await settle()
        # Handled inside sub (one_for_one): the root's one_for_all is not involved.
        assert [log.count(p, "started") for p in ("root/z", "root/sub/x", "root/sub/y")] == [1, 2, 1]
        sub = system.tree().children[1]
        assert (sub.kind, sub.path, sub.restarts) == ("supervisor", "root/sub", 0)
        assert [c.restarts for c in sub.children] == [1, 0]


async def test_spawn_at_run_time_under_the_root_and_a_nested_supervisor(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", children=[Supervisor("sub", children=[])])
    async with open_test_system(tree) as system:
        ref = await system.spawn("root", worker("dyn", log))
        assert ref == system.ref("root/dyn")
        assert await ref.ask("hello") == ("ok", "hello")
        deep = await system.spawn("root/sub", worker("deep", log, restart="transient"))
        assert await deep.ask(1) == ("ok", 1)
        # Spawned children are supervised like static ones.
        inject_crash(system, "root/dyn")
        await settle()
        assert log.count("root/dyn", "started") == 2
        assert await ref.ask("again") == ("ok", "again")
        assert [c.name for c in system.tree().children] == ["sub", "dyn"]
        with pytest.raises(ValueError, match="already has a child"):
            await system.spawn("root", worker("dyn", log))
        with pytest.raises(NoSuchActor):
            await system.spawn("root/dyn", worker("x", log))
        with pytest.raises(NoSuchActor):
            await system.spawn("root/missing", worker("x", log))


async def test_a_spawned_child_is_stopped_with_the_system(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", children=[worker("a", log)])
    async with open_test_system(tree) as system:
        await system.spawn("root", worker("b", log))
        await settle()
    assert log.lifecycle()[-2:] == [("root/b", "stopping"), ("root/a", "stopping")]


async def test_a_factory_may_be_any_callable_and_gets_args_and_kwargs(autojump_clock: Any) -> None:
    log = Log()
    seen: list[tuple[Any, ...]] = []

    def build(a: int, b: int, *, log: Log) -> Worker:
        seen.append((a, b))
        return Worker(log)

    tree = Supervisor("root", children=[ChildSpec("w", build, args=(1, 2), kwargs={"log": log})])
    async with open_test_system(tree) as system:
        await system.ref("root/w").ask("x")
        inject_crash(system, "root/w")
        await settle()
        assert seen == [(1, 2), (1, 2)]  # a fresh instance per incarnation


async def test_a_group_restart_cancels_the_other_members_at_once(autojump_clock: Any) -> None:
    # KERNEL.md: one_for_all "cancel[s] and restart[s] all children": a busy sibling is not waited for,
    # its stopping() does not run, and an ask it was handling fails with ActorStopped.
    log = Log()
    tree = Supervisor("root", strategy="one_for_all", children=[worker(n, log) for n in "ab"])
    async with open_test_system(tree) as system:
        await settle()
        outcome: list[BaseException] = []

        async def ask_a() -> None:
            try:
                await system.ref("root/a").ask(("sleep", 5), timeout=60)
            except ActorStopped as exc:
                outcome.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask_a)
            await trio.sleep(1)
            inject_crash(system, "root/b")
        await settle()
        assert len(outcome) == 1
        assert log.times("root/a", "started") == [0.0, 1.0]  # restarted at the crash, not after 5 s
        assert log.count("root/a", "stopping") == 0
        assert log.count("root/a", "done") == 0


async def test_sends_to_a_stopped_actor_are_dead_letters(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", children=[worker("t", log, restart="temporary")])
    async with open_test_system(tree) as system:
        ref = system.ref("root/t")
        await ref.tell(("stop",))
        await settle()
        before = system.dead_letters.count
        with pytest.raises(ActorStopped):
            await ref.tell("late")
        with pytest.raises(ActorStopped):
            ref.tell_nowait("later")
        with pytest.raises(ActorStopped):
            await ref.ask("latest")
        assert system.dead_letters.count == before + 3
        assert [d.message for d in list(system.dead_letters.recent)[-3:]] == ["late", "later", "latest"]
        assert {d.reason for d in list(system.dead_letters.recent)[-3:]} == {"sent to a stopped actor"}
