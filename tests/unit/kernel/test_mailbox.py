"""Mailbox: bounded FIFO, overflow policies, survival across restarts, addressing errors."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from kernel import (
    ActorStopped,
    AskTimeout,
    KernelError,
    MailboxFull,
    MailboxStatistics,
    NoSuchActor,
    Supervisor,
)
from kernel.testing import open_test_system

from ._helpers import Log, settle, worker

W = "root/w"


def tree(log: Log, **spec: Any) -> Supervisor:
    return Supervisor("root", children=[worker("w", log, **spec)])


async def test_messages_are_handled_one_at_a_time_in_fifo_order(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(tree(log)) as system:
        ref = system.ref(W)
        for i in range(50):
            await ref.tell(i)
        assert await ref.ask("last") == ("ok", "last")
        assert log.received(W) == [*range(50), "last"]


async def test_capacity_counts_queued_messages_not_the_one_being_handled(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(tree(log, mailbox=2, overflow="reject")) as system:
        ref = system.ref(W)
        await ref.tell(("sleep", 10))
        await settle()  # the actor has taken it: it is being handled, no longer queued
        ref.tell_nowait("a")
        ref.tell_nowait("b")
        assert system.tree().children[0].mailbox == MailboxStatistics(depth=2, capacity=2, blocked_senders=0)
        with pytest.raises(MailboxFull) as info:
            ref.tell_nowait("c")
        assert info.value.path == W and info.value.capacity == 2
        await trio.sleep(10)
        await settle()
        assert log.received(W) == [("sleep", 10), "a", "b"]


async def test_block_tell_waits_for_room_and_blocked_senders_keep_fifo_order(autojump_clock: Any) -> None:
    log = Log()
    returned: dict[str, float] = {}
    async with open_test_system(tree(log, mailbox=1, overflow="block")) as system:
        ref = system.ref(W)
        await ref.tell(("sleep", 1))  # handled 0 -> 1
        await settle()
        await ref.tell(("sleep", 1))  # fills the mailbox (capacity 1) without waiting
        assert trio.current_time() == 0.0

        async def send(name: str) -> None:
            await ref.tell(("sleep", 1, name))
            returned[name] = trio.current_time()

        async with trio.open_nursery() as nursery:
            for name in ("s1", "s2", "s3"):
                nursery.start_soon(send, name)
                await settle()  # each sender is blocked before the next one starts
            assert returned == {}
        # A blocked sender is admitted when a queued message is taken: at 1, 2 and 3 seconds.
        assert returned == {"s1": 1.0, "s2": 2.0, "s3": 3.0}
        await ref.ask("end", timeout=100)
        assert [(e.at, e.msg) for e in log.where(W, "recv")] == [
            (0.0, ("sleep", 1)), (1.0, ("sleep", 1)),
            (2.0, ("sleep", 1, "s1")), (3.0, ("sleep", 1, "s2")), (4.0, ("sleep", 1, "s3")), (5.0, "end"),
        ]


async def test_block_tell_resumes_in_order_after_room_appears(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(tree(log, mailbox=2, overflow="block")) as system:
        ref = system.ref(W)
        await ref.tell(("sleep", 5))
        await settle()
        async with trio.open_nursery() as nursery:
            for i in range(6):
                nursery.start_soon(ref.tell, i)
                await settle()
        assert trio.current_time() == 5.0  # nobody got in before the actor made room
        await ref.ask("end")
        assert log.received(W) == [("sleep", 5), 0, 1, 2, 3, 4, 5, "end"]


async def test_reject_raises_mailbox_full_from_tell_tell_nowait_and_ask(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(tree(log, mailbox=1, overflow="reject")) as system:
        ref = system.ref(W)
        await ref.tell(("sleep", 3))
        await settle()
        await ref.tell("queued")
        with pytest.raises(MailboxFull):
            await ref.tell("rejected-tell")
        with pytest.raises(MailboxFull):
            ref.tell_nowait("rejected-nowait")
        with pytest.raises(MailboxFull):
            await ref.ask("rejected-ask")
        assert trio.current_time() == 0.0  # reject never waits
        await trio.sleep(3)
        await settle()  # the actor, woken at the same instant, takes "queued"
        assert await ref.ask("after") == ("ok", "after")
        assert log.received(W) == [("sleep", 3), "queued", "after"]


async def test_drop_oldest_drops_the_oldest_queued_message_as_a_dead_letter(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(tree(log, mailbox=2, overflow="drop_oldest")) as system:
        ref = system.ref(W)
        await ref.tell(("sleep", 3))
        await settle()
        await ref.tell("a")
        await ref.tell("b")
        await ref.tell("c")  # drops "a"
        ref.tell_nowait("d")  # drops "b"
        assert trio.current_time() == 0.0
        assert [(d.path, d.message) for d in system.dead_letters.recent] == [(W, "a"), (W, "b")]
        assert system.dead_letters.count == 2
        assert all("drop_oldest" in d.reason for d in system.dead_letters.recent)
        await trio.sleep(3)
        await settle()
        await ref.ask("end")
        assert log.received(W) == [("sleep", 3), "c", "d", "end"]


async def test_drop_oldest_answers_a_dropped_ask_with_mailbox_full(autojump_clock: Any) -> None:
    log = Log()
    outcome: list[tuple[str, float]] = []
    async with open_test_system(tree(log, mailbox=1, overflow="drop_oldest")) as system:
        ref = system.ref(W)
        await ref.tell(("sleep", 3))
        await settle()

        async def asker() -> None:
            try:
                await ref.ask("question")
            except MailboxFull as exc:
                outcome.append((type(exc).__name__, trio.current_time()))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(asker)
            await settle()
            await ref.tell("newer")  # drops the queued ask
        assert outcome == [("MailboxFull", 0.0)]
        assert [d.message for d in system.dead_letters.recent] == ["question"]
        await trio.sleep(3)
        await settle()
        assert log.received(W) == [("sleep", 3), "newer"]


async def test_tell_nowait_on_a_full_block_mailbox_raises_mailbox_full(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(tree(log, mailbox=1, overflow="block")) as system:
        ref = system.ref(W)
        await ref.tell(("sleep", 3))
        await settle()
        ref.tell_nowait("fits")
        with pytest.raises(MailboxFull):
            ref.tell_nowait("does-not-fit")
        await trio.sleep(3)
        await ref.ask("end")
        assert log.received(W) == [("sleep", 3), "fits", "end"]


async def test_ref_and_mailbox_survive_a_restart(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(tree(log)) as system:
        ref = system.ref(W)
        await ref.tell(("sleep", 1))
        await ref.tell(("crash", "boom"))
        await ref.tell("m1")
        await ref.tell("m2")
        answer = await ref.ask("m3")
        assert answer == ("ok", "m3")
        assert system.ref(W) == ref
        assert [(e.event, e.msg) for e in log.where(W) if e.event in ("started", "recv")] == [
            ("started", None), ("recv", ("sleep", 1)), ("recv", ("crash", "boom")),
            ("started", None), ("recv", "m1"), ("recv", "m2"), ("recv", "m3"),
        ]
        assert log.times(W, "started") == [0.0, 1.0]


async def test_send_to_an_actor_stopped_for_good_raises_actor_stopped(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(tree(log, restart="transient")) as system:
        ref = system.ref(W)
        await ref.ask(("stop",))
        await settle()
        with pytest.raises(ActorStopped) as info:
            await ref.tell("late")
        assert info.value.path == W
        with pytest.raises(ActorStopped):
            ref.tell_nowait("late")
        with pytest.raises(ActorStopped):
            await ref.ask("late")
        assert system.ref(W) == ref  # still addressable, just stopped
        assert "late" not in log.received(W)


async def test_a_path_that_names_no_actor_raises_no_such_actor(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(tree(log)) as system:
        with pytest.raises(NoSuchActor) as info:
            system.ref("root/nope")
        assert "nope" in str(info.value) and "children: w" in str(info.value)  # says what exists
        for path in ("elsewhere/w", "root/w/child", "root/nope/deeper"):
            with pytest.raises(NoSuchActor):
                system.ref(path)
        assert isinstance(info.value, KernelError) and isinstance(info.value, LookupError)


async def test_a_supervisor_path_raises_no_such_actor_with_a_helpful_message(autojump_clock: Any) -> None:
    log = Log()
    nested = Supervisor("root", children=[Supervisor("sub", children=[worker("w", log)])])
    async with open_test_system(nested) as system:
        for path in ("root", "root/sub"):
            with pytest.raises(NoSuchActor) as info:
                system.ref(path)
            assert "supervisor" in str(info.value)
        assert system.ref("root/sub/w").path == "root/sub/w"


async def test_an_ask_blocked_on_a_full_mailbox_times_out_and_is_never_delivered(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(tree(log, mailbox=1, overflow="block")) as system:
        ref = system.ref(W)
        await ref.tell(("sleep", 10))
        await settle()
        await ref.tell("fills")
        with pytest.raises(AskTimeout):
            await ref.ask("blocked ask")  # the default 5 s include the wait for room
        assert trio.current_time() == 5.0
        await trio.sleep(10)
        await settle()
        assert log.received(W) == [("sleep", 10), "fills"]


async def test_blocked_senders_keep_their_order_across_a_restart(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(tree(log, mailbox=1, overflow="block")) as system:
        ref = system.ref(W)
        await ref.tell(("sleep", 1))
        await settle()
        await ref.tell(("crash", "x"))
        async with trio.open_nursery() as nursery:
            for name in ("s1", "s2", "s3"):
                nursery.start_soon(ref.tell, name)
                await settle()
        await ref.ask("end")
        assert log.received(W) == [("sleep", 1), ("crash", "x"), "s1", "s2", "s3", "end"]
        assert log.count(W, "started") == 2
