"""Keyed children: one actor per key, started on first message, passivated when idle or over max_live."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from kernel import Actor, ActorStopped, ChildSpec, EntityRef, KeyedRef, NodeSnapshot, NoSuchActor, Supervisor
from kernel.testing import inject_crash, open_test_system

from ._helpers import Device, Log, settle, tasks_living, worker

D = "root/devices"


def keyed_tree(log: Log, **spec: Any) -> Supervisor:
    stopping_delay = spec.pop("stopping_delay", 0.0)
    params: dict[str, Any] = {"idle_timeout": 10.0}
    params.update(spec)
    return Supervisor("root", max_restarts=1, children=[
        ChildSpec("devices", Device, kwargs={"log": log, "stopping_delay": stopping_delay}, keyed=True, **params),
    ])


def keyed_node(system: Any) -> NodeSnapshot:
    return system.tree().children[0]


def live_keys(system: Any) -> list[str]:
    return [c.key for c in keyed_node(system).children]


async def test_key_ref_and_path_ref_address_the_same_actor(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(keyed_tree(log)) as system:
        group = system.ref(D)
        assert isinstance(group, KeyedRef)
        by_key = group.key("u1:phone")
        by_path = system.ref("root/devices/u1:phone")
        assert isinstance(by_key, EntityRef) and by_key == by_path
        assert by_key.path == by_path.path == "root/devices/u1:phone"
        assert await by_key.ask("a") == ("u1:phone", 1, "a")
        assert await by_path.ask("b") == ("u1:phone", 2, "b")  # the same instance
        assert await group.key("u2:watch").ask("c") == ("u2:watch", 1, "c")
        assert log.count("root/devices/u1:phone", "started") == 1
        with pytest.raises(TypeError):
            await group.tell("no key")


async def test_the_factory_gets_the_key_first(autojump_clock: Any) -> None:
    calls: list[tuple[Any, ...]] = []
    log = Log()

    def build(key: str, region: str, *, log: Log) -> Device:
        calls.append((key, region))
        return Device(key, log)

    tree = Supervisor("root", children=[
        ChildSpec("devices", build, args=("eu",), kwargs={"log": log}, keyed=True),
    ])
    async with open_test_system(tree) as system:
        await system.ref(D).key("k7").ask("hi")
        assert calls == [("k7", "eu")]


async def test_a_keyed_actor_starts_on_its_first_message(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(keyed_tree(log)) as system:
        await trio.sleep(3)
        await settle()
        assert log == []
        assert keyed_node(system).live == 0 and live_keys(system) == []
        with pytest.raises(NoSuchActor):
            system.node("root/devices/u1")
        await system.ref(D).key("u1").tell("first")
        await settle()
        assert [(e.at, e.event) for e in log] == [(3.0, "started"), (3.0, "recv")]
        assert live_keys(system) == ["u1"]
        assert keyed_node(system).kind == "keyed"


async def test_a_keyed_actor_is_passivated_after_idle_timeout(autojump_clock: Any) -> None:
    log = Log()
    path = "root/devices/u1"
    async with open_test_system(keyed_tree(log)) as system:
        ref = system.ref(D).key("u1")
        await ref.tell("m1")
        await trio.sleep(5)
        await ref.tell("m2")  # resets the idle clock: due at 15, not 10
        await trio.sleep(9.999)
        await settle()
        assert log.count(path, "stopping") == 0 and live_keys(system) == ["u1"]
        await trio.sleep(0.001)
        await settle()
        assert log.times(path, "stopping") == [15.0]
        assert live_keys(system) == [] and keyed_node(system).live == 0
        with pytest.raises(NoSuchActor):
            system.node(path)
        # The ref stays valid: the next message starts a new incarnation (fresh state).
        await trio.sleep(5)
        assert await ref.ask("m3") == ("u1", 1, "m3")
        assert log.times(path, "started") == [0.0, 20.0]


async def test_max_live_passivates_the_least_recently_used_first(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(keyed_tree(log, max_live=2, idle_timeout=1000.0)) as system:
        group = system.ref(D)
        for t, key in [(0, "a"), (1, "b"), (2, "c")]:
            await trio.sleep_until(t)
            await group.key(key).ask("hi")
        await settle()
        assert [(e.at, e.path) for e in log.where(event="stopping")] == [(2.0, "root/devices/a")]
        assert sorted(live_keys(system)) == ["b", "c"]
        await trio.sleep_until(3)
        await group.key("b").ask("touch")  # b is now more recent than c
        await trio.sleep_until(4)
        await group.key("d").ask("hi")
        await settle()
        assert [(e.at, e.path) for e in log.where(event="stopping")] == [
            (2.0, "root/devices/a"), (4.0, "root/devices/c"),
        ]
        assert sorted(live_keys(system)) == ["b", "d"]
        assert keyed_node(system).live == 2


async def test_a_message_sent_while_passivating_goes_to_the_next_incarnation(autojump_clock: Any) -> None:
    log = Log()
    path = "root/devices/u1"
    async with open_test_system(keyed_tree(log, stopping_delay=2.0)) as system:
        ref = system.ref(D).key("u1")
        await ref.tell("m1")
        await trio.sleep_until(11)  # passivation started at 10; stopping() awaits until 12
        await settle()
        assert log.times(path, "stopping") == [10.0]
        await ref.tell("m2")
        assert await ref.ask("m3") == ("u1", 2, "m3")
        assert trio.current_time() == 12.0
        assert [(e.at, e.event, e.msg) for e in log.where(path)] == [
            (0.0, "started", "u1"), (0.0, "recv", "m1"),
            (10.0, "stopping", None), (12.0, "stopped-hook-done", None),
            (12.0, "started", "u1"), (12.0, "recv", "m2"), (12.0, "recv", "m3"),
        ]
        assert system.dead_letters.count == 0


async def test_self_stop_in_a_keyed_actor_passivates_it(autojump_clock: Any) -> None:
    log = Log()
    path = "root/devices/u1"
    async with open_test_system(keyed_tree(log)) as system:
        ref = system.ref(D).key("u1")
        await ref.ask(("stop",))
        await settle()
        assert [e.event for e in log.where(path)] == ["started", "recv", "stopping"]
        assert live_keys(system) == []
        assert await ref.ask("again") == ("u1", 1, "again")


async def test_a_crash_in_one_keys_actor_does_not_affect_other_keys(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(keyed_tree(log)) as system:
        a, b = system.ref(D).key("a"), system.ref(D).key("b")
        assert await b.ask("b1") == ("b", 1, "b1")
        await a.tell(("crash", "0"))
        assert await a.ask("after-0") == ("a", 1, "after-0")  # restarted: a fresh instance
        # The second crash inside `within` exceeds the key's own intensity (the supervisor's
        # max_restarts=1): the key is retired, what was queued behind the crash fails ...
        await a.tell(("crash", "1"))
        with pytest.raises(ActorStopped):
            await a.ask("after-1")
        # ... and the next message starts a fresh actor for the key.
        assert await a.ask("after-2") == ("a", 1, "after-2")
        assert await b.ask("b2") == ("b", 2, "b2")  # b kept its state: untouched
        assert log.count("root/devices/b", "started") == 1
        assert log.count("root/devices/a", "started") == 3
        assert system.tree().state == "running"
        assert keyed_node(system).restarts == 1


async def test_inject_crash_reaches_a_keyed_actor(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(keyed_tree(log)) as system:
        ref = system.ref(D).key("a")
        await ref.ask("x")
        inject_crash(system, "root/devices/a")
        await settle()
        assert await ref.ask("y") == ("a", 1, "y")
        assert keyed_node(system).last_failure.type == "InjectedCrash"


async def test_an_idle_keyed_actor_holds_no_task(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(keyed_tree(log, idle_timeout=1000.0)) as system:
        await settle()
        baseline = tasks_living()
        for i in range(20):
            await system.ref(D).key(f"k{i}").ask("hi")
        await settle()
        assert keyed_node(system).live == 20
        assert tasks_living() == baseline
        assert system.node("root/devices/k3").running is False
        await system.ref(D).key("k3").tell(("sleep", 5))
        await settle()
        assert system.node("root/devices/k3").running is True
        assert tasks_living() == baseline + 1
        await trio.sleep(5)
        await settle()
        assert system.node("root/devices/k3").running is False
        assert tasks_living() == baseline


async def test_keyed_actors_stop_gracefully_with_the_system(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(keyed_tree(log, idle_timeout=1000.0)) as system:
        await system.ref(D).key("idle").ask("hi")
        await system.ref(D).key("busy").tell(("sleep", 2))
        await system.ref(D).key("busy").tell("queued")
        await settle()
    assert trio.current_time() == 2.0
    assert log.received("root/devices/busy") == [("sleep", 2), "queued"]  # drained
    assert sorted(e.path for e in log.where(event="stopping")) == ["root/devices/busy", "root/devices/idle"]


# -- regressions: bugs found while writing this suite, fixed in the kernel -----------------------------

async def test_max_live_never_runs_two_actors_for_one_key(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(keyed_tree(log, max_live=1)) as system:
        group = system.ref(D)
        await group.key("a").tell(("sleep", 10))
        await trio.sleep(1)
        await group.key("b").tell(("sleep", 3))  # a is busy, so it cannot be passivated
        await trio.sleep(1)
        await group.key("b").tell(("sleep", 3))  # must queue behind b's first message
        await trio.sleep(20)
        b = [(e.at, e.event) for e in log.where("root/devices/b") if e.event in ("started", "recv", "done")]
        assert b == [(1.0, "started"), (1.0, "recv"), (4.0, "done"), (4.0, "recv"), (7.0, "done")]


async def test_an_actor_busy_past_its_idle_timeout_is_passivated_once_idle(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(keyed_tree(log)) as system:
        await system.ref(D).key("a").ask(("sleep", 15), timeout=100)  # busy 0..15, idle_timeout 10
        await trio.sleep(100)
        await settle()
        assert log.times("root/devices/a", "stopping") == [25.0]


async def test_the_incarnation_after_an_interrupted_passivation_is_passivated_too(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(keyed_tree(log, stopping_delay=2.0)) as system:
        ref = system.ref(D).key("u1")
        await ref.tell("m1")
        await trio.sleep_until(11)
        await ref.tell("m2")  # handled at 12 by the next incarnation
        await trio.sleep(100)
        await settle()
        assert log.times("root/devices/u1", "stopping") == [10.0, 22.0]


async def test_keyed_actors_publish_started_and_stopped(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(keyed_tree(log)) as system:
        async with system.telemetry.subscribe(kinds=["started", "stopped"]) as sub:
            await system.ref(D).key("u1").ask("hi")
            await trio.sleep(20)
            events = [(e.kind, e.path, e.at) for e in system.telemetry.drain(sub)]
        assert events == [("started", "root/devices/u1", 0.0), ("stopped", "root/devices/u1", 10.0)]


async def test_the_keyed_nodes_processed_count_survives_passivation(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(keyed_tree(log)) as system:
        for i in range(3):
            await system.ref(D).key("a").ask(i)
        await system.ref(D).key("b").ask("x")
        assert keyed_node(system).processed == 4
        await trio.sleep(20)
        await settle()
        assert keyed_node(system).live == 0
        assert keyed_node(system).processed == 4


# -- regressions: found in review ---------------------------------------------------------------------
class _FailsToStart(Actor):
    def __init__(self, key: str) -> None:
        self.key = key

    async def started(self) -> None:
        raise RuntimeError("cannot start")

    async def receive(self, msg: Any) -> Any:
        return msg


async def test_a_key_whose_actor_cannot_start_is_retired_without_starving_the_system(autojump_clock: Any) -> None:
    tree = Supervisor("root", max_restarts=3, within=5.0, children=[
        ChildSpec("devices", _FailsToStart, keyed=True), ChildSpec("other", _FailsToStart, restart="temporary"),
    ])
    async with open_test_system(tree) as system:
        ref = system.ref(D).key("k")
        with pytest.raises(ActorStopped):
            await ref.ask("hello", timeout=60)  # retired after max_restarts: the ask fails, never hangs
        with trio.fail_after(1):
            await trio.sleep(0.5)  # the event loop is still turning (a zero-delay loop would spin)
        assert keyed_node(system).restarts == 3
        assert system.tree().state == "running"


async def test_a_blocked_sender_to_a_retired_key_is_told(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(keyed_tree(log, mailbox=1, restart="temporary")) as system:
        ref = system.ref(D).key("k")
        await ref.tell(("sleep", 5))
        await settle()
        await ref.tell("queued")  # fills the mailbox
        outcome: list[str] = []

        async def blocked() -> None:
            try:
                await ref.tell("blocked")
                outcome.append("delivered")
            except ActorStopped:
                outcome.append("stopped")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(blocked)
            await settle()
            system.inject_crash("root/devices/k")  # temporary: the key is retired
            await trio.sleep(10)
        assert outcome == ["stopped"]


async def test_a_group_restart_rebuilds_keyed_actors(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", strategy="one_for_all", children=[
        ChildSpec("devices", Device, kwargs={"log": log}, keyed=True, idle_timeout=1000.0),
        worker("w", log),
    ])
    async with open_test_system(tree) as system:
        ref = system.ref(D).key("k")
        assert await ref.ask("one") == ("k", 1, "one")
        inject_crash(system, "root/w")
        await settle()
        assert await ref.ask("two") == ("k", 1, "two")  # a new actor: its count starts again
        assert log.count("root/devices/k", "started") == 2
