"""Dead letters: counted on the system and per node, kept in `recent`, published as telemetry."""

from __future__ import annotations

from typing import Any

import trio

from kernel import DeadLetter, DeadLettered, NodeSnapshot, Supervisor
from kernel.testing import open_test_system

from ._helpers import Log, settle, worker


def node(system: Any, name: str) -> NodeSnapshot:
    return next(c for c in system.tree().children if c.name == name)


async def test_a_crash_interrupted_message_is_a_dead_letter_with_its_exception(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", children=[worker("w", log), worker("other", log)])
    async with open_test_system(tree) as system:
        await settle()
        async with system.telemetry.subscribe(kinds=["dead_letter"]) as sub:
            await trio.sleep(1.5)
            await system.ref("root/w").tell(("crash", "kaput"))
            event = await sub.__anext__()
        assert system.dead_letters.count == 1
        assert list(system.dead_letters.recent) == [DeadLetter(
            path="root/w", message=("crash", "kaput"), reason=system.dead_letters.recent[0].reason,
            error_type="Boom", error_message="kaput", at=1.5,
        )]
        assert isinstance(event, DeadLettered)
        assert (event.kind, event.path, event.at, event.error_type, event.error_message) == (
            "dead_letter", "root/w", 1.5, "Boom", "kaput",
        )
        assert event.detail == system.dead_letters.recent[0].reason
        assert (node(system, "w").dead_letters, node(system, "other").dead_letters) == (1, 0)


async def test_drop_oldest_drops_are_dead_letters(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", children=[worker("w", log, mailbox=1, overflow="drop_oldest")])
    async with open_test_system(tree) as system:
        ref = system.ref("root/w")
        await ref.tell(("sleep", 1))
        await settle()
        async with system.telemetry.subscribe(kinds=["dead_letter"]) as sub:
            for i in range(4):
                await ref.tell(i)  # 0, 1, 2 are pushed out by the next one
            events = system.telemetry.drain(sub)
        assert [d.message for d in system.dead_letters.recent] == [0, 1, 2]
        assert all(d.error_type is None and d.error_message is None for d in system.dead_letters.recent)
        assert [(e.path, e.at) for e in events] == [("root/w", 0.0)] * 3
        assert node(system, "w").dead_letters == 3
        await trio.sleep(1)
        await settle()
        assert log.received("root/w") == [("sleep", 1), 3]


async def test_messages_left_when_an_actor_stops_for_good_are_dead_letters(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", children=[worker("w", log, restart="temporary")])
    async with open_test_system(tree) as system:
        ref = system.ref("root/w")
        await ref.tell(("sleep", 2))
        await ref.tell(("stop",))
        await ref.tell("left-1")
        await ref.tell("left-2")
        async with system.telemetry.subscribe(kinds=["dead_letter"]) as sub:
            await trio.sleep(2)
            await settle()
            events = system.telemetry.drain(sub)
        assert [(d.message, d.at) for d in system.dead_letters.recent] == [("left-1", 2.0), ("left-2", 2.0)]
        assert [e.path for e in events] == ["root/w", "root/w"]
        assert node(system, "w").dead_letters == 2
        assert node(system, "w").state == "stopped"


async def test_dead_letter_counts_add_up_across_nodes(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", children=[
        worker("a", log),
        Supervisor("sub", children=[worker("b", log, mailbox=1, overflow="drop_oldest")]),
    ])
    async with open_test_system(tree) as system:
        await system.ref("root/a").tell(("crash", "1"))
        await system.ref("root/a").ask("sync")
        await system.ref("root/a").tell(("crash", "2"))
        b = system.ref("root/sub/b")
        await b.tell(("sleep", 1))
        await settle()
        await b.tell("x")
        await b.tell("y")
        await settle()
        tree_now = system.tree()
        a_letters = tree_now.children[0].dead_letters
        b_letters = tree_now.children[1].children[0].dead_letters
        assert (a_letters, b_letters) == (2, 1)
        assert system.dead_letters.count == 3
        assert [d.path for d in system.dead_letters.recent] == ["root/a", "root/a", "root/sub/b"]
