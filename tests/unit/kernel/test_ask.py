"""Ask: replies, the default and custom timeouts, crashes, stops and late replies."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from kernel import DEFAULT_ASK_TIMEOUT, ActorCrashed, ActorStopped, AskTimeout, Supervisor
from kernel.testing import open_test_system

from ._helpers import Boom, Log, settle, worker

W = "root/w"


def tree(log: Log, **spec: Any) -> Supervisor:
    return Supervisor("root", children=[worker("w", log, **spec)])


async def test_ask_returns_what_receive_returns(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(tree(log)) as system:
        assert await system.ref(W).ask({"q": 1}) == ("ok", {"q": 1})
        assert trio.current_time() == 0.0


async def test_ask_default_timeout_is_five_virtual_seconds(autojump_clock: Any) -> None:
    log = Log()
    assert DEFAULT_ASK_TIMEOUT == 5.0
    async with open_test_system(tree(log)) as system:
        start = trio.current_time()
        with pytest.raises(AskTimeout) as info:
            await system.ref(W).ask(("sleep", 100))
        assert trio.current_time() - start == 5.0
        assert isinstance(info.value, TimeoutError)
        assert info.value.timeout == 5.0 and info.value.path == W


async def test_ask_answered_just_inside_the_default_timeout_succeeds(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(tree(log)) as system:
        assert await system.ref(W).ask(("sleep", 4.999)) == ("ok", ("sleep", 4.999))
        assert trio.current_time() == 4.999


@pytest.mark.parametrize("timeout", [0.25, 1.5, 30.0])
async def test_ask_custom_timeout(autojump_clock: Any, timeout: float) -> None:
    log = Log()
    async with open_test_system(tree(log)) as system:
        with pytest.raises(AskTimeout) as info:
            await system.ref(W).ask(("sleep", 100), timeout=timeout)
        assert trio.current_time() == timeout
        assert info.value.timeout == timeout


async def test_ask_that_crashes_raises_actor_crashed_with_the_cause(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(tree(log)) as system:
        with pytest.raises(ActorCrashed) as info:
            await system.ref(W).ask(("crash", "bad input"))
        assert trio.current_time() == 0.0
        cause = info.value.__cause__
        assert isinstance(cause, Boom) and str(cause) == "bad input"
        assert info.value.error is cause
        assert info.value.path == W


async def test_ask_to_an_actor_that_stops_raises_actor_stopped(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(tree(log, restart="transient")) as system:
        ref = system.ref(W)
        await ref.tell(("sleep", 1))
        await ref.tell(("stop",))  # a normal exit: transient, so stopped for good
        with pytest.raises(ActorStopped) as info:
            await ref.ask("queued behind the stop")
        assert trio.current_time() == 1.0
        assert info.value.path == W
        assert "queued behind the stop" not in log.received(W)


async def test_a_late_reply_is_dropped_and_the_actor_keeps_working(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(tree(log)) as system:
        ref = system.ref(W)
        with pytest.raises(AskTimeout):
            await ref.ask(("sleep", 3), timeout=1.0)
        assert trio.current_time() == 1.0
        assert await ref.ask("next") == ("ok", "next")
        assert trio.current_time() == 3.0
        node = system.tree().children[0]
        assert (node.processed, node.restarts, node.last_failure) == (2, 0, None)
        assert system.dead_letters.count == 0


async def test_crash_with_queued_asks_only_the_handled_one_fails(autojump_clock: Any) -> None:
    log = Log()
    results: dict[str, Any] = {}
    async with open_test_system(tree(log)) as system:
        ref = system.ref(W)
        await ref.tell(("sleep", 1))
        await settle()

        async def ask(name: str, msg: Any) -> None:
            try:
                results[name] = (await ref.ask(msg), trio.current_time())
            except ActorCrashed as exc:
                results[name] = (type(exc).__name__, trio.current_time())

        async with trio.open_nursery() as nursery:
            for name, msg in [("first", ("crash", "x")), ("second", "a"), ("third", "b")]:
                nursery.start_soon(ask, name, msg)
                await settle()  # queued in this order
        assert results == {
            "first": ("ActorCrashed", 1.0),
            "second": (("ok", "a"), 1.0),
            "third": (("ok", "b"), 1.0),
        }
        # The queued asks were answered by the restarted incarnation.
        assert [(e.event, e.msg) for e in log.where(W) if e.event in ("started", "recv")][-3:] == [
            ("started", None), ("recv", "a"), ("recv", "b"),
        ]


async def test_an_ask_times_out_at_exactly_its_deadline_and_a_late_reply_is_dropped(autojump_clock: Any) -> None:
    from kernel.testing import TestProbe

    async with open_test_system(Supervisor("root")) as system:
        probe = TestProbe(system)
        for timeout in (0.25, 3.0, 0.25):  # a short deadline after a long one still fires on time
            started = trio.current_time()
            with pytest.raises(AskTimeout):
                await probe.ref.ask("q", timeout=timeout)
            assert trio.current_time() - started == timeout
            assert await probe.expect_message() == "q"
            probe.reply("late")  # dropped: nobody waits any more
        assert len(system.timers) <= 3


async def test_a_cancelled_asker_gets_cancelled_and_its_reply_is_dropped(autojump_clock: Any) -> None:
    from kernel.testing import TestProbe

    async with open_test_system(Supervisor("root")) as system:
        probe = TestProbe(system)
        with trio.move_on_after(1.0) as scope:
            await probe.ref.ask("q", timeout=10.0)
        assert scope.cancelled_caught and trio.current_time() == 1.0
        assert await probe.expect_message() == "q"
        probe.reply("late")  # no one to hand it to: dropped, nothing raised
        await trio.sleep(20)  # the old deadline passes without waking anyone


async def test_an_answered_ask_lets_its_message_go(autojump_clock: Any) -> None:
    """The ask's deadline stays on the timer heap until it passes or is swept; the answered envelope
    must not keep its (possibly large) message alive that long."""
    import gc
    import weakref

    from kernel import Actor, ChildSpec

    class Payload:
        pass

    class Sizer(Actor):
        async def receive(self, msg: Any) -> Any:
            return "seen"

    async with open_test_system(Supervisor("root", children=[ChildSpec("s", Sizer)])) as system:
        payload = Payload()
        gone = weakref.ref(payload)
        assert await system.ref("root/s").ask(payload, timeout=1000.0) == "seen"
        del payload
        gc.collect()
        assert len(system.timers) >= 1  # the deadline is still on the heap ...
        assert gone() is None  # ... without the message
