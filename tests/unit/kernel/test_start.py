"""ActorSystem.start yields a running tree; spawn waits for a supervisor that is coming up.

Trio runs the tasks that are ready at once in a shuffled order, so each race is tried on many
systems in one test: a single run would pass by luck about half of the time.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from kernel import Actor, ChildSpec, Supervisor
from kernel.testing import open_test_system

from ._helpers import Boom, Log, settle, worker

SYSTEMS = 40


def walk(node: Any) -> list[Any]:
    return [node, *(n for child in node.children for n in walk(child))]


async def test_spawn_into_a_nested_supervisor_right_after_start(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", children=[Supervisor("dyn", children=[worker("static", log)])])
    for seed in range(SYSTEMS):
        async with open_test_system(tree, seed=seed) as system:
            ref = await system.spawn("root/dyn", worker(f"late{seed}", log))
            assert await ref.ask("hi") == ("ok", "hi")


async def test_start_yields_once_every_node_of_the_initial_tree_runs(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", children=[
        worker("a", log),
        Supervisor("mid", children=[Supervisor("deep", children=[worker("b", log)]), worker("c", log)]),
        ChildSpec("keys", Actor, keyed=True),
    ])
    for seed in range(SYSTEMS):
        async with open_test_system(tree, seed=seed) as system:
            states = {node.path: node.state for node in walk(system.tree())}
            assert set(states.values()) == {"running"}, states
            assert len(states) == 7


class SlowStart(Actor):
    async def started(self) -> None:
        await trio.sleep(3)


async def test_start_waits_for_started_hooks_like_otp_start_link(autojump_clock: Any) -> None:
    tree = Supervisor("root", children=[Supervisor("sub", children=[ChildSpec("slow", SlowStart)])])
    async with open_test_system(tree) as system:
        assert trio.current_time() == 3.0
        assert system.tree().children[0].state == "running"


class CrashesOnce(Actor):
    starts = 0

    async def started(self) -> None:
        type(self).starts += 1
        if type(self).starts == 1:
            raise Boom("first start fails")


async def test_a_child_that_fails_its_first_start_is_restarted_before_start_yields(autojump_clock: Any) -> None:
    CrashesOnce.starts = 0
    tree = Supervisor("root", base_delay=1.0, max_delay=1.0, children=[ChildSpec("c", CrashesOnce)])
    async with open_test_system(tree, seed=3) as system:
        assert CrashesOnce.starts == 2
        assert trio.current_time() > 0.0  # it waited out the restart delay
        assert system.tree().children[0].state == "running"


async def test_spawn_waits_for_a_supervisor_between_restarts(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", base_delay=2.0, max_delay=2.0, children=[Supervisor("sub", children=[worker("x", log)])])
    async with open_test_system(tree, seed=1) as system:
        sub = system.node("root/sub")
        sub.request_stop(drain=False)  # exits normally: permanent, so restarted after about 2 s
        await settle()
        assert sub.state == "restarting"
        ref = await system.spawn("root/sub", worker("late", log))
        assert trio.current_time() > 1.5
        assert await ref.ask("hi") == ("ok", "hi")


async def test_spawn_fails_clearly_when_the_supervisor_gives_up_while_it_waits(autojump_clock: Any) -> None:
    log = Log()
    inner = Supervisor("sub", max_restarts=0, children=[ChildSpec("c", CrashesForever)])
    tree = Supervisor("root", max_restarts=5, within=100.0, base_delay=5.0, max_delay=5.0,
                      children=[inner, worker("w", log)])
    async with open_test_system(tree, seed=2) as system:
        sub = system.node("root/sub")
        sub.request_stop(drain=False)
        await settle()
        assert sub.state == "restarting"
        CrashesForever.armed = True
        with pytest.raises(RuntimeError, match="gave up"):
            await system.spawn("root/sub", worker("late", log))
        CrashesForever.armed = False


class CrashesForever(Actor):
    armed = False

    async def started(self) -> None:
        if type(self).armed:
            raise Boom("cannot start")


async def test_spawn_into_a_stopped_supervisor_fails_at_once(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", children=[Supervisor("sub", restart="temporary", children=[worker("x", log)])])
    async with open_test_system(tree) as system:
        system.node("root/sub").request_stop(drain=True)
        await settle()
        with pytest.raises(RuntimeError, match="stopped"):
            await system.spawn("root/sub", worker("late", log))


class SpawnsASibling(Actor):
    async def started(self) -> None:
        # Its supervisor is starting and waits for this very hook: the spawn must not wait for it.
        await self.system.spawn("root/sub", ChildSpec("sibling", Actor))


async def test_a_started_hook_may_spawn_under_its_own_starting_supervisor(autojump_clock: Any) -> None:
    tree = Supervisor("root", children=[Supervisor("sub", children=[ChildSpec("spawner", SpawnsASibling)])])
    async with open_test_system(tree) as system:
        assert [c.name for c in system.tree().children[0].children] == ["spawner", "sibling"]
