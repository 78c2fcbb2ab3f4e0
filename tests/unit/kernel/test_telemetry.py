"""Telemetry: lifecycle events with path, time, attempt, delay and error; slow subscribers never block."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from kernel import (
    Crashed,
    GaveUp,
    MailboxFull,
    MailboxOverflow,
    Restarted,
    Started,
    Stopped,
    Supervisor,
    SupervisorGaveUp,
    TelemetryEvent,
)
from kernel.testing import inject_crash, open_test_system

from ._helpers import Log, kinds, settle, worker


async def next_event(sub: Any) -> TelemetryEvent:
    with trio.fail_after(60):
        return await sub.__anext__()


async def test_crash_restart_and_start_events_carry_their_details(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", base_delay=0.5, children=[worker("w", log)])
    async with open_test_system(tree, seed=3) as system:
        await settle()
        async with system.telemetry.subscribe(kinds=["crashed", "restarted", "started"]) as sub:
            await trio.sleep(1)
            await system.ref("root/w").tell(("crash", "bad thing"))
            events: list[TelemetryEvent] = []
            async for event in sub:
                events.append(event)
                if event.kind == "started":
                    break
        crashed, restarted, started = events
        assert isinstance(crashed, Crashed) and isinstance(restarted, Restarted) and isinstance(started, Started)
        assert (crashed.kind, crashed.path, crashed.at, crashed.error_type, crashed.error_message) == (
            "crashed", "root/w", 1.0, "Boom", "bad thing",
        )
        assert (restarted.kind, restarted.path, restarted.at, restarted.attempt) == ("restarted", "root/w", 1.0, 1)
        assert restarted.delay is not None and 0.4 <= restarted.delay <= 0.6
        assert (started.kind, started.path, started.at, started.attempt) == (
            "started", "root/w", 1.0 + restarted.delay, 1,
        )


async def test_a_first_start_has_no_attempt(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(Supervisor("root", children=[])) as system:
        async with system.telemetry.subscribe(kinds=["started"]) as sub:
            await system.spawn("root", worker("dyn", log))
            event = await next_event(sub)
        assert (event.path, event.attempt, event.delay, event.error_type) == ("root/dyn", None, None, None)


async def test_stopped_events_on_a_graceful_stop(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", children=[worker("a", log), Supervisor("sub", children=[worker("b", log)])])
    async with open_test_system(tree) as system:
        await trio.sleep(4)
        sub = system.telemetry.attach(kinds=["stopped"])
    events = system.telemetry.drain(sub)
    assert all(isinstance(e, Stopped) and e.at == 4.0 for e in events)
    assert sorted(e.path for e in events) == ["root", "root/a", "root/sub", "root/sub/b"]
    assert events[-1].path == "root"


async def test_a_stop_for_good_after_a_normal_exit_is_a_stopped_event(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", children=[worker("w", log, restart="transient")])
    async with open_test_system(tree) as system:
        await settle()  # past the first start
        async with system.telemetry.subscribe() as sub:
            await trio.sleep(2)
            await system.ref("root/w").tell(("stop",))
            event = await next_event(sub)
        assert (event.kind, event.path, event.at) == ("stopped", "root/w", 2.0)


async def test_gave_up_event(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", max_restarts=0, children=[worker("w", log)])
    sub: Any = None
    with pytest.raises(SupervisorGaveUp):
        async with open_test_system(tree) as system:
            await settle()
            sub = system.telemetry.attach()
            await trio.sleep(1)
            inject_crash(system, "root/w")
            await trio.sleep(10_000)
    events = system.telemetry.drain(sub)
    assert kinds(events)[:2] == [("crashed", "root/w"), ("gave_up", "root")]
    gave_up = events[1]
    assert isinstance(gave_up, GaveUp)
    assert (gave_up.at, gave_up.error_type) == (1.0, "SupervisorGaveUp")
    assert gave_up.error_message is not None and "root" in gave_up.error_message
    assert ("stopped", "root") in kinds(events)


@pytest.mark.parametrize("overflow", ["block", "reject", "drop_oldest"])
async def test_mailbox_full_event_for_each_overflow_policy(autojump_clock: Any, overflow: str) -> None:
    log = Log()
    tree = Supervisor("root", children=[worker("w", log, mailbox=1, overflow=overflow)])
    async with open_test_system(tree) as system:
        ref = system.ref("root/w")
        await ref.tell(("sleep", 1))
        await settle()
        await ref.tell("fills")
        async with system.telemetry.subscribe(kinds=["mailbox_full"]) as sub:
            await trio.sleep(0.5)
            if overflow == "drop_oldest":
                ref.tell_nowait("overflows")  # drops "fills"
            else:
                with pytest.raises(MailboxFull):
                    ref.tell_nowait("overflows")
            event = await next_event(sub)
        assert isinstance(event, MailboxOverflow)
        assert (event.kind, event.path, event.at, event.detail) == ("mailbox_full", "root/w", 0.5, overflow)


async def test_a_slow_subscriber_never_blocks_actors_and_its_drops_are_counted(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", max_restarts=1000, within=1.0, children=[worker("w", log)])
    async with open_test_system(tree) as system:
        await settle()
        async with system.telemetry.subscribe(buffer=2) as slow, system.telemetry.subscribe() as fast:
            for _ in range(20):
                inject_crash(system, "root/w")
                await settle()
            assert trio.current_time() == 0.0  # nothing waited for the slow reader
            assert log.count("root/w", "started") == 21
            got = system.telemetry.drain(fast)
            assert len(got) == 60  # crashed, restarted, started per crash
            assert slow.pending() == 2
            assert slow.dropped == 58
            assert system.telemetry.dropped == 58
            assert fast.dropped == 0
            first_two = [await next_event(slow), await next_event(slow)]
            assert kinds(first_two) == [("crashed", "root/w"), ("restarted", "root/w")]


async def test_subscriptions_only_see_events_while_open_and_kinds_filter(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", children=[worker("w", log)])
    async with open_test_system(tree) as system:
        await settle()
        inject_crash(system, "root/w")
        await settle()
        async with system.telemetry.subscribe(kinds=["restarted"]) as sub:
            inject_crash(system, "root/w")
            await settle()
            events = system.telemetry.drain(sub)
        assert kinds(events) == [("restarted", "root/w")]
        assert system.telemetry.subscriber_count == 0


async def test_events_are_plain_values_and_listening_says_whether_anyone_subscribed(autojump_clock: Any) -> None:
    event = Restarted(path="root/w", at=1.5, attempt=2, delay=0.25)
    assert (event.kind, event.path, event.at, event.attempt, event.delay, event.error_type) == (
        "restarted", "root/w", 1.5, 2, 0.25, None,
    )
    assert not hasattr(event, "to_dict")  # rendering for the wire is transport's
    async with open_test_system(Supervisor("root")) as system:
        telemetry = system.telemetry
        assert not telemetry.listening
        async with telemetry.subscribe() as _:
            assert telemetry.listening
        sub = telemetry.attach()
        assert telemetry.listening
        telemetry.detach(sub)
        assert not telemetry.listening


async def test_a_sender_blocking_on_a_full_mailbox_is_a_mailbox_full_event(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", children=[worker("w", log, mailbox=1, overflow="block")])
    async with open_test_system(tree) as system:
        ref = system.ref("root/w")
        await ref.tell(("sleep", 1))
        await settle()
        await ref.tell("fills")
        async with system.telemetry.subscribe(kinds=["mailbox_full"]) as sub:
            await ref.tell("waits")  # blocks until 1.0
            assert trio.current_time() == 1.0
            events = system.telemetry.drain(sub)
        assert [(e.path, e.at) for e in events] == [("root/w", 0.0)]
