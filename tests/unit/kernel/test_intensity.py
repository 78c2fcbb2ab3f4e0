"""Restart intensity: more than max_restarts within `within` seconds -> give up and escalate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import trio

from kernel import ActorStopped, ActorSystem, InjectedCrash, Supervisor, SupervisorGaveUp
from kernel.testing import inject_crash, open_test_system

from ._helpers import Boom, Log, settle, worker


async def crash_at(system: Any, path: str, times: Sequence[float]) -> None:
    """Crash ``path`` at each of these absolute virtual times (the mock clock starts at 0)."""
    for t in times:
        await trio.sleep_until(t)
        await settle()
        inject_crash(system, path, Boom(f"crash at {t}"))
        await settle()


def root(log: Log, *, max_restarts: int = 3, within: float = 5.0, names: str = "w") -> Supervisor:
    return Supervisor("root", max_restarts=max_restarts, within=within,
                      children=[worker(n, log) for n in names])


async def test_a_restart_exactly_within_seconds_old_has_left_the_window(autojump_clock: Any) -> None:
    log = Log()
    assert trio.current_time() == 0.0
    async with open_test_system(root(log)) as system:
        await crash_at(system, "root/w", [0.0, 1.0, 2.0, 5.0])
        assert system.tree().state == "running"
        assert system.tree().children[0].restarts == 4
        assert await system.ref("root/w").ask("alive") == ("ok", "alive")


async def test_four_restarts_inside_the_window_give_up(autojump_clock: Any) -> None:
    log = Log()
    holder: list[ActorSystem] = []
    with pytest.raises(SupervisorGaveUp) as info:
        async with open_test_system(root(log)) as system:
            holder.append(system)
            await crash_at(system, "root/w", [0.0, 1.0, 2.0, 4.999])
            await trio.sleep(10_000)  # the give-up cancels this; a hang would fail instead
    assert trio.current_time() == 4.999
    assert info.value.path == "root"
    assert isinstance(info.value.__cause__, Boom) and str(info.value.__cause__) == "crash at 4.999"
    assert info.value.last_error is info.value.__cause__
    snapshot = holder[0].tree()
    assert snapshot.state == "failed"
    assert snapshot.last_failure.type == "SupervisorGaveUp"
    assert snapshot.children[0].state == "stopped"
    assert log.count("root/w", "started") == 4  # the fourth crash was not restarted


async def test_max_restarts_zero_gives_up_on_the_first_crash(autojump_clock: Any) -> None:
    log = Log()
    with pytest.raises(SupervisorGaveUp):
        async with open_test_system(root(log, max_restarts=0)) as system:
            await crash_at(system, "root/w", [3.0])
            await trio.sleep(10_000)  # the give-up cancels this; a hang would fail instead
    assert trio.current_time() == 3.0


async def test_intensity_counts_crashes_of_all_children_together(autojump_clock: Any) -> None:
    log = Log()
    with pytest.raises(SupervisorGaveUp):
        async with open_test_system(root(log, max_restarts=2, within=10.0, names="abc")) as system:
            await crash_at(system, "root/a", [0.0])
            await crash_at(system, "root/b", [1.0])
            assert system.tree().state == "running"  # two restarts: allowed
            await crash_at(system, "root/c", [2.0])
            await trio.sleep(10_000)  # the give-up cancels this; a hang would fail instead
    assert trio.current_time() == 2.0


async def test_old_restarts_leave_the_window(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(root(log, max_restarts=1, within=5.0)) as system:
        await crash_at(system, "root/w", [5.0 * i for i in range(10)])
        assert system.tree().state == "running"
        assert log.count("root/w", "started") == 11


async def test_giving_up_stops_the_children_and_fails_queued_asks(autojump_clock: Any) -> None:
    log = Log()
    outcome: list[tuple[str, float]] = []
    async with trio.open_nursery() as outside:
        tree = Supervisor("root", max_restarts=1, children=[
            worker("a", log), worker("b", log, shutdown_timeout=1.5),
        ])
        with pytest.raises(SupervisorGaveUp):
            async with open_test_system(tree) as system:
                b = system.ref("root/b")
                await b.tell(("sleep", 100))
                await settle()

                async def ask_b() -> None:
                    try:
                        await b.ask("never answered", timeout=1000)
                    except ActorStopped:
                        outcome.append(("ActorStopped", trio.current_time()))

                outside.start_soon(ask_b)
                await crash_at(system, "root/a", [1.0, 2.0])
                await trio.sleep(10_000)  # the give-up cancels this; a hang would fail instead
        # Gave up at 2.0; busy b got its 1.5 s shutdown timeout, then was cancelled.
        assert trio.current_time() == 3.5
    assert outcome == [("ActorStopped", 3.5)]  # failed when the tree went down: it never hangs
    assert "never answered" not in log.received("root/b")
    assert log.count("root/b", "done") == 0


async def test_a_nested_supervisor_giving_up_escalates_to_its_parent(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", max_restarts=5, within=100.0, children=[
        worker("z", log),
        Supervisor("sub", max_restarts=1, within=10.0, children=[worker("w", log), worker("v", log)]),
    ])
    async with open_test_system(tree) as system:
        await settle()
        async with system.telemetry.subscribe() as sub:
            await crash_at(system, "root/sub/w", [1.0, 2.0])
            events = system.telemetry.drain(sub)
        gave_up = [e for e in events if e.kind == "gave_up"]
        assert [(e.path, e.at, e.error_type) for e in gave_up] == [("root/sub", 2.0, "SupervisorGaveUp")]
        restarted = [e for e in events if e.kind == "restarted" and e.path == "root/sub"]
        assert [(e.at, e.attempt) for e in restarted] == [(2.0, 1)]
        # The sub-tree came back: both of its children restarted; the root's other child did not.
        assert [log.count(p, "started") for p in ("root/z", "root/sub/w", "root/sub/v")] == [1, 3, 2]
        sub_node = system.tree().children[1]
        assert (sub_node.state, sub_node.restarts) == ("running", 1)
        assert sub_node.last_failure.type == "SupervisorGaveUp"
        assert system.tree().state == "running"
        assert await system.ref("root/sub/w").ask("back") == ("ok", "back")


async def test_escalation_all_the_way_up_ends_the_system(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", max_restarts=0, children=[
        Supervisor("sub", max_restarts=0, children=[worker("w", log)]),
    ])
    with pytest.raises(SupervisorGaveUp) as info:
        async with open_test_system(tree) as system:
            await crash_at(system, "root/sub/w", [1.5])
            await trio.sleep(10_000)  # the give-up cancels this; a hang would fail instead
    assert trio.current_time() == 1.5
    assert info.value.path == "root"
    assert isinstance(info.value.__cause__, SupervisorGaveUp)
    assert info.value.__cause__.path == "root/sub"


async def test_a_restarted_supervisor_starts_with_a_fresh_restart_window(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", max_restarts=10, within=100.0, children=[
        Supervisor("sub", max_restarts=1, within=10.0, children=[worker("w", log)]),
    ])
    async with open_test_system(tree) as system:
        await settle()
        async with system.telemetry.subscribe(kinds=["gave_up"]) as sub:
            await crash_at(system, "root/sub/w", [1.0, 2.0])  # sub gives up; root restarts it
            await crash_at(system, "root/sub/w", [3.0])  # one crash of the new incarnation: within its limit
            assert [(e.path, e.at) for e in system.telemetry.drain(sub)] == [("root/sub", 2.0)]


async def test_inject_crash_default_error_counts_like_any_crash(autojump_clock: Any) -> None:
    log = Log()
    with pytest.raises(SupervisorGaveUp) as info:
        async with open_test_system(root(log, max_restarts=0)) as system:
            await settle()
            inject_crash(system, "root/w")
            await trio.sleep(10_000)  # the give-up cancels this; a hang would fail instead
    assert isinstance(info.value.__cause__, InjectedCrash)


async def test_give_up_is_reported_even_if_the_block_was_waiting_on_an_actor(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", max_restarts=0, children=[
        worker("a", log), worker("b", log, shutdown_timeout=1.0),
    ])
    with pytest.raises(SupervisorGaveUp):
        async with open_test_system(tree) as system:
            await trio.sleep(1)
            inject_crash(system, "root/a")
            await system.ref("root/b").ask(("sleep", 100), timeout=1000)
