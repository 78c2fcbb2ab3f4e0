"""kernel.testing: open_test_system, TestProbe, inject_crash and run."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from kernel import Actor, ChildSpec, InjectedCrash, NoSuchActor, Supervisor, Terminated
from kernel.testing import TestProbe, inject_crash, open_test_system, run

from ._helpers import Boom, Log, settle, worker


class AsksProbe(Actor):
    """Asks the probe it is given, and reports the answer back to it."""

    async def receive(self, msg: Any) -> None:
        probe_ref, question = msg
        answer = await probe_ref.ask(question)
        await probe_ref.tell(("answer", answer))


async def test_open_test_system_refuses_the_real_clock() -> None:
    with pytest.raises(RuntimeError, match="MockClock"):
        async with open_test_system(Supervisor("root", children=[])):
            pass


async def test_expect_no_message_for_refuses_the_real_clock() -> None:
    log = Log()
    async with open_test_system_real(Supervisor("root", children=[worker("w", log)])) as system:
        with pytest.raises(RuntimeError, match="MockClock"):
            await TestProbe(system).expect_no_message_for(0.01)


def open_test_system_real(tree: Supervisor) -> Any:
    from kernel import ActorSystem

    return ActorSystem.start(tree, seed=0)


async def test_expect_message_matches_a_value_a_type_or_a_predicate(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(Supervisor("root", children=[worker("w", log)])) as system:
        probe = TestProbe(system)
        w = system.ref("root/w")
        for msg in ("hello", 42, {"k": 1}):
            await w.tell(("tell", probe.ref, msg))
        assert await probe.expect_message("hello") == "hello"
        assert await probe.expect_message(int) == 42
        assert await probe.expect_message(lambda m: m.get("k") == 1) == {"k": 1}
        await w.tell(("tell", probe.ref, "surprise"))
        with pytest.raises(AssertionError, match="expected 'other'"):
            await probe.expect_message("other")


async def test_expect_message_times_out_in_virtual_time(autojump_clock: Any) -> None:
    async with open_test_system(Supervisor("root", children=[])) as system:
        probe = TestProbe(system)
        with pytest.raises(AssertionError, match="no message within 7"):
            await probe.expect_message(timeout=7.0)
        assert trio.current_time() == 7.0


async def test_expect_no_message_for_fails_when_something_arrives(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(Supervisor("root", children=[worker("w", log)])) as system:
        probe = TestProbe(system)
        await probe.expect_no_message_for(10.0)
        assert trio.current_time() == 10.0
        await system.ref("root/w").tell(("tell", probe.ref, "ping"))
        with pytest.raises(AssertionError, match="expected no message"):
            await probe.expect_no_message_for(1.0)


async def test_a_probe_answers_an_actors_ask_with_reply(autojump_clock: Any) -> None:
    async with open_test_system(Supervisor("root", children=[ChildSpec("a", AsksProbe)])) as system:
        probe = TestProbe(system)
        await system.ref("root/a").tell((probe.ref, "what time is it?"))
        assert await probe.receive() == "what time is it?"
        probe.reply("tea time")
        assert await probe.expect_message() == ("answer", "tea time")
        with pytest.raises(RuntimeError):
            probe.reply("nobody asked")


async def test_expect_terminated_checks_the_path(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", children=[worker("a", log, restart="temporary")])
    async with open_test_system(tree) as system:
        probe = TestProbe(system)
        probe.watch(system.ref("root/a"))
        inject_crash(system, "root/a")
        with pytest.raises(AssertionError, match="root/b"):
            await probe.expect_terminated("root/b")
        probe.watch(system.ref("root/a"))  # already stopped: notified at once
        assert isinstance(await probe.expect_terminated("root/a"), Terminated)


async def test_inject_crash_uses_injected_crash_or_the_given_error(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", children=[worker("w", log), Supervisor("sub", children=[])])
    async with open_test_system(tree) as system:
        await settle()
        inject_crash(system, "root/w")
        await settle()
        assert system.tree().children[0].last_failure.type == InjectedCrash.__name__
        inject_crash(system, "root/w", Boom("custom"))
        await settle()
        failure = system.tree().children[0].last_failure
        assert (failure.type, failure.message) == ("Boom", "custom")
        assert system.tree().children[0].restarts == 2
        with pytest.raises(NoSuchActor):
            inject_crash(system, "root/sub")
        with pytest.raises(NoSuchActor):
            inject_crash(system, "root/missing")


def test_run_drives_a_program_on_the_mock_clock() -> None:
    async def main(seconds: float) -> float:
        await trio.sleep(seconds)
        return trio.current_time()

    assert run(main, 86_400.0) == 86_400.0


def test_a_whole_scenario_is_reproducible_under_run() -> None:
    async def scenario() -> list[tuple[str, float, float | None]]:
        log = Log()
        tree = Supervisor("root", base_delay=1.0, max_restarts=50, within=1.0, children=[worker("w", log)])
        async with open_test_system(tree, seed=42) as system:
            await settle()
            sub = system.telemetry.attach(kinds=["restarted", "started"])
            for _ in range(5):
                inject_crash(system, "root/w")
                await trio.sleep(30)  # longer than any of these delays (at most 16 x 1.2)
            return [(e.kind, e.at, e.delay) for e in system.telemetry.drain(sub)]

    first, second = run(scenario), run(scenario)
    assert first == second
    assert [kind for kind, _, _ in first] == ["restarted", "started"] * 5
