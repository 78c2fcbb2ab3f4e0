"""Watch: Terminated(path, reason) when the watched actor stops for good; restarts don't notify."""

from __future__ import annotations

from typing import Any

import trio

from kernel import ChildSpec, Supervisor, Terminated
from kernel.testing import TestProbe, inject_crash, open_test_system

from ._helpers import Device, Log, settle, worker


async def test_probe_watch_gets_terminated_when_the_actor_stops_for_good(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", children=[worker("w", log, restart="transient")])
    async with open_test_system(tree) as system:
        probe = TestProbe(system)
        ref = system.ref("root/w")
        probe.watch(ref)
        await trio.sleep(2)
        await ref.tell(("stop",))
        msg = await probe.expect_terminated("root/w")
        assert trio.current_time() == 2.0
        assert isinstance(msg, Terminated) and msg.path == "root/w"
        assert isinstance(msg.reason, str) and msg.reason
        await probe.expect_no_message_for(10.0)  # exactly one notice


async def test_restarts_do_not_notify_watchers(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", max_restarts=10, children=[worker("w", log)])
    async with open_test_system(tree) as system:
        probe = TestProbe(system)
        probe.watch(system.ref("root/w"))
        await settle()
        for _ in range(3):
            inject_crash(system, "root/w")
            await settle()
        await system.ref("root/w").tell(("stop",))  # permanent: a normal exit is restarted too
        await probe.expect_no_message_for(10.0)
        assert log.count("root/w", "started") == 5
    # Stopping with the system is "for good": now the watcher hears of it.
    assert probe.pending == 1
    assert (await probe.expect_terminated("root/w")).path == "root/w"


async def test_an_actor_can_watch_another_with_self_watch(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", children=[worker("watcher", log), worker("target", log, restart="temporary")])
    async with open_test_system(tree) as system:
        target = system.ref("root/target")
        await system.ref("root/watcher").ask(("watch", target))
        inject_crash(system, "root/target")
        await settle()
        notices = [m for m in log.received("root/watcher") if isinstance(m, Terminated)]
        assert [n.path for n in notices] == ["root/target"]
        assert "crash" in notices[0].reason


async def test_crash_and_normal_exit_give_different_reasons(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", children=[
        worker("crashes", log, restart="temporary"), worker("exits", log, restart="temporary"),
    ])
    async with open_test_system(tree) as system:
        probe = TestProbe(system)
        probe.watch(system.ref("root/crashes"))
        probe.watch(system.ref("root/exits"))
        await system.ref("root/crashes").tell(("crash", "x"))
        crashed = await probe.expect_terminated("root/crashes")
        await system.ref("root/exits").tell(("stop",))
        exited = await probe.expect_terminated("root/exits")
        assert crashed.reason != exited.reason


async def test_unwatch_stops_the_notice(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", children=[worker("watcher", log), worker("target", log, restart="temporary")])
    async with open_test_system(tree) as system:
        target = system.ref("root/target")
        watcher = system.ref("root/watcher")
        await watcher.ask(("watch", target))
        await watcher.ask(("unwatch", target))
        await target.tell(("stop",))
        await settle()
        await trio.sleep(5)
        assert not [m for m in log.received("root/watcher") if isinstance(m, Terminated)]


async def test_watching_an_actor_already_stopped_notifies_at_once(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", children=[worker("w", log, restart="transient")])
    async with open_test_system(tree) as system:
        ref = system.ref("root/w")
        await ref.ask(("stop",))
        await settle()
        probe = TestProbe(system)
        probe.watch(ref)
        await probe.expect_terminated("root/w", timeout=0.001)


async def test_watching_a_keyed_actor_notifies_on_passivation(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", children=[ChildSpec("devices", Device, kwargs={"log": log}, keyed=True,
                                                  idle_timeout=10.0)])
    async with open_test_system(tree) as system:
        ref = system.ref("root/devices").key("d1")
        await ref.ask("hello")
        probe = TestProbe(system)
        probe.watch(ref)
        await probe.expect_terminated("root/devices/d1", timeout=20.0)


async def test_watching_a_key_with_no_live_actor_notifies_at_once(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", children=[ChildSpec("devices", Device, kwargs={"log": log}, keyed=True)])
    async with open_test_system(tree) as system:
        probe = TestProbe(system)
        probe.watch(system.ref("root/devices").key("nobody"))
        await probe.expect_terminated("root/devices/nobody", timeout=0.001)
        assert log == []  # watching does not start the key's actor
