"""receive_batch (CHANGELOG): everything queued, up to max_batch, in one call; Failed answers one ask."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from kernel import Actor, ActorCrashed, ChildSpec, Failed, Supervisor
from kernel.testing import open_test_system

from ._helpers import Boom, settle


class Committer(Actor):
    max_batch = 3

    def __init__(self, batches: list[list[Any]]) -> None:
        self.batches = batches

    async def receive_batch(self, messages: list[Any]) -> list[Any]:
        self.batches.append(list(messages))
        if "explode" in messages:
            raise Boom("batch failed")
        await trio.sleep(1)
        return [Failed(ValueError(m)) if str(m).startswith("bad") else f"done {m}" for m in messages]


async def test_queued_messages_are_taken_together_up_to_max_batch(autojump_clock: Any) -> None:
    batches: list[list[Any]] = []
    results: dict[str, Any] = {}
    tree = Supervisor("root", children=[ChildSpec("c", Committer, args=(batches,))])
    async with open_test_system(tree) as system:
        ref = system.ref("root/c")

        async def ask(m: str) -> None:
            try:
                results[m] = (await ref.ask(m), trio.current_time())
            except ValueError as exc:
                results[m] = (f"ValueError {exc}", trio.current_time())

        async with trio.open_nursery() as nursery:
            for m in ("a", "b", "bad-c", "d", "e"):
                nursery.start_soon(ask, m)
                await settle()
        assert batches == [["a"], ["b", "bad-c", "d"], ["e"]]
        assert results == {
            "a": ("done a", 1.0), "b": ("done b", 2.0), "bad-c": ("ValueError bad-c", 2.0),
            "d": ("done d", 2.0), "e": ("done e", 3.0),
        }
        assert system.tree().children[0].processed == 5


async def test_a_crash_in_a_batch_fails_every_ask_of_the_batch(autojump_clock: Any) -> None:
    batches: list[list[Any]] = []
    failures: list[tuple[str, str]] = []
    tree = Supervisor("root", children=[ChildSpec("c", Committer, args=(batches,))])
    async with open_test_system(tree) as system:
        ref = system.ref("root/c")
        await ref.tell("slow")
        await settle()

        async def ask(m: str) -> None:
            with pytest.raises(ActorCrashed) as info:
                await ref.ask(m)
            assert isinstance(info.value.__cause__, Boom)
            failures.append((m, str(info.value.__cause__)))

        async with trio.open_nursery() as nursery:
            for m in ("x", "explode", "y"):
                nursery.start_soon(ask, m)
                await settle()
        assert sorted(failures) == [("explode", "batch failed"), ("x", "batch failed"), ("y", "batch failed")]
        assert [d.message for d in system.dead_letters.recent] == ["x", "explode", "y"]
        assert await ref.ask("after") == "done after"  # restarted
