"""system.tree(): the live tree as typed snapshots, with per-node restarts, last failure, mailbox and counts."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import trio

from kernel import ChildSpec, FailureSnapshot, MailboxStatistics, NodeSnapshot, Supervisor
from kernel.testing import inject_crash, open_test_system

from ._helpers import Device, Log, settle, worker


def walk(node: NodeSnapshot) -> list[NodeSnapshot]:
    return [node, *(n for child in node.children for n in walk(child))]


def mailbox(depth: int, capacity: int) -> MailboxStatistics:
    return MailboxStatistics(depth=depth, capacity=capacity, blocked_senders=0)


def tree_of(log: Log) -> Supervisor:
    return Supervisor("root", base_delay=2.0, max_delay=2.0, children=[
        worker("w", log, mailbox=8),
        Supervisor("sub", strategy="rest_for_one", children=[worker("x", log)]),
        ChildSpec("devices", Device, kwargs={"log": log}, keyed=True, mailbox=4),
    ])


async def test_every_node_is_a_frozen_typed_snapshot(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(tree_of(log)) as system:
        await system.ref("root/devices").key("d1").ask("hi")
        await settle()
        snapshot = system.tree()
        nodes = walk(snapshot)
        assert all(type(node) is NodeSnapshot for node in nodes)
        with pytest.raises(dataclasses.FrozenInstanceError):
            snapshot.state = "stopped"  # type: ignore[misc]
        by_path = {n.path: n for n in nodes}
        assert set(by_path) == {"root", "root/w", "root/sub", "root/sub/x", "root/devices", "root/devices/d1"}
        assert [(p, by_path[p].kind) for p in sorted(by_path)] == [
            ("root", "supervisor"), ("root/devices", "keyed"), ("root/devices/d1", "actor"),
            ("root/sub", "supervisor"), ("root/sub/x", "actor"), ("root/w", "actor"),
        ]
        assert [by_path[p].name for p in ("root", "root/w", "root/sub/x")] == ["root", "w", "x"]
        assert {p: n.state for p, n in by_path.items()} == {
            "root": "running", "root/w": "running", "root/sub": "running", "root/sub/x": "running",
            "root/devices": "running", "root/devices/d1": "idle",  # live, between messages, no task
        }
        assert by_path["root/w"].mailbox == mailbox(0, 8)
        assert by_path["root/devices"].mailbox == mailbox(0, 4)
        assert by_path["root"].mailbox is None
        assert all(n.last_failure is None and n.restarts == 0 for n in nodes)
        assert [c.name for c in snapshot.children] == ["w", "sub", "devices"]
        # What one kind adds: a supervisor's strategy, a keyed group's counts, an entity's key.
        assert (by_path["root"].strategy, by_path["root/sub"].strategy, by_path["root/w"].strategy) == (
            "one_for_one", "rest_for_one", None,
        )
        devices = by_path["root/devices"]
        assert (devices.live, devices.max_live, devices.passivated, devices.children_truncated) == (1, 10_000, 0, False)
        assert (by_path["root/devices/d1"].key, by_path["root/w"].key, by_path["root/w"].live) == ("d1", None, None)


async def test_values_after_messages_and_crashes(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(tree_of(log)) as system:
        ref = system.ref("root/w")
        for i in range(3):
            await ref.ask(i)
        await trio.sleep_until(2.0)
        await ref.tell(("crash", "it broke"))
        await settle()
        w = system.tree().children[0]
        assert (w.state, w.restarts, w.processed) == ("restarting", 1, 3)
        assert w.last_failure == FailureSnapshot(type="Boom", message="it broke", at=2.0)  # trio's clock
        for i in range(5):
            await ref.tell(f"waiting-{i}")
        assert system.tree().children[0].mailbox == mailbox(5, 8)
        assert ref.statistics() == mailbox(5, 8)
        await trio.sleep(3)
        await ref.ask("sync")
        w = system.tree().children[0]
        assert (w.state, w.restarts, w.processed) == ("running", 1, 9)
        assert w.mailbox is not None and w.mailbox.depth == 0
        assert w.last_failure is not None and w.last_failure.message == "it broke"  # kept after the restart


async def test_a_mailbox_depth_counts_queued_messages_only(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(tree_of(log)) as system:
        ref = system.ref("root/w")
        await ref.tell(("sleep", 5))
        await settle()
        assert ref.statistics().depth == 0
        await ref.tell("a")
        await ref.tell("b")
        assert ref.statistics().depth == 2


async def test_nested_and_stopped_nodes(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", children=[
        worker("t", log, restart="temporary"),
        Supervisor("sub", children=[worker("x", log)]),
    ])
    async with open_test_system(tree) as system:
        await system.ref("root/t").tell(("crash", "gone"))
        inject_crash(system, "root/sub/x")
        await settle()
        snapshot = system.tree()
        t, sub = snapshot.children
        assert t.last_failure is not None and (t.state, t.restarts, t.last_failure.type) == ("stopped", 0, "Boom")
        x = sub.children[0]
        assert x.last_failure is not None
        assert (x.path, x.state, x.restarts, x.last_failure.type) == ("root/sub/x", "running", 1, "InjectedCrash")
        assert (sub.restarts, sub.last_failure) == (0, None)


async def test_ref_statistics_for_an_actor_a_key_and_a_keyed_group(autojump_clock: Any) -> None:
    log = Log()
    tree = Supervisor("root", children=[
        worker("w", log, mailbox=2),
        ChildSpec("devices", Device, kwargs={"log": log}, keyed=True, mailbox=3),
    ])
    async with open_test_system(tree) as system:
        w = system.ref("root/w")
        await w.tell(("sleep", 5))
        await settle()
        await w.tell("a")
        await w.tell("b")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(w.tell, "blocked")  # the mailbox is full: this sender waits
            await settle()
            assert w.statistics() == MailboxStatistics(depth=2, capacity=2, blocked_senders=1)
        group = system.ref("root/devices")
        assert group.key("cold").statistics() == mailbox(0, 3)  # no live actor for that key
        assert group.statistics() == mailbox(0, 3)
        for key in ("d1", "d2"):
            await group.key(key).tell(("sleep", 5))
        await settle()
        for msg in ("x", "y"):
            await group.key("d1").tell(msg)
        await group.key("d2").tell("z")
        assert group.key("d1").statistics() == mailbox(2, 3)
        assert group.statistics() == mailbox(3, 3)  # the keys' totals; capacity is each key's
        assert system.tree().children[1].mailbox == group.statistics()
