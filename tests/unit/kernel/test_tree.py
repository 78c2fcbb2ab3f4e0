"""system.tree(): the live tree, JSON-ready, with per-node restarts, last failure, mailbox and counts."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import trio

from kernel import ChildSpec, Supervisor
from kernel.testing import inject_crash, open_test_system

from ._helpers import Device, Log, settle, worker

SHAPE = {"name", "path", "kind", "state", "restarts", "lastFailure", "mailbox", "processed", "children"}


def walk(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node["children"] for n in walk(child))]


def tree_of(log: Log) -> Supervisor:
    return Supervisor("root", base_delay=2.0, max_delay=2.0, children=[
        worker("w", log, mailbox=8),
        Supervisor("sub", strategy="rest_for_one", children=[worker("x", log)]),
        ChildSpec("devices", Device, kwargs={"log": log}, keyed=True, mailbox=4),
    ])


async def test_every_node_has_the_documented_shape_and_is_json_ready(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(tree_of(log)) as system:
        await system.ref("root/devices").key("d1").ask("hi")
        await settle()
        snapshot = system.tree()
        assert json.loads(json.dumps(snapshot)) == snapshot
        nodes = walk(snapshot)
        assert all(SHAPE <= node.keys() for node in nodes)
        by_path = {n["path"]: n for n in nodes}
        assert set(by_path) == {"root", "root/w", "root/sub", "root/sub/x", "root/devices", "root/devices/d1"}
        assert [(p, by_path[p]["kind"]) for p in sorted(by_path)] == [
            ("root", "supervisor"), ("root/devices", "keyed"), ("root/devices/d1", "actor"),
            ("root/sub", "supervisor"), ("root/sub/x", "actor"), ("root/w", "actor"),
        ]
        assert [by_path[p]["name"] for p in ("root", "root/w", "root/sub/x")] == ["root", "w", "x"]
        assert {p: n["state"] for p, n in by_path.items()} == {
            "root": "running", "root/w": "running", "root/sub": "running", "root/sub/x": "running",
            "root/devices": "running", "root/devices/d1": "idle",  # live, between messages, no task
        }
        assert by_path["root/w"]["mailbox"] == {"depth": 0, "capacity": 8}
        assert by_path["root/devices"]["mailbox"]["capacity"] == 4
        assert all(n["lastFailure"] is None and n["restarts"] == 0 for n in nodes)
        assert [c["name"] for c in snapshot["children"]] == ["w", "sub", "devices"]


async def test_values_after_messages_and_crashes(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(tree_of(log)) as system:
        ref = system.ref("root/w")
        for i in range(3):
            await ref.ask(i)
        await trio.sleep_until(2.0)
        await ref.tell(("crash", "it broke"))
        await settle()
        w = system.tree()["children"][0]
        assert (w["state"], w["restarts"], w["processed"]) == ("restarting", 1, 3)
        failure = w["lastFailure"]
        assert (failure["type"], failure["message"]) == ("Boom", "it broke")
        assert failure["atMonotonic"] == 2.0
        assert isinstance(failure["at"], str) and datetime.fromisoformat(failure["at"].replace("Z", "+00:00"))
        for i in range(5):
            await ref.tell(f"waiting-{i}")
        assert system.tree()["children"][0]["mailbox"] == {"depth": 5, "capacity": 8}
        await trio.sleep(3)
        await ref.ask("sync")
        w = system.tree()["children"][0]
        assert (w["state"], w["restarts"], w["processed"]) == ("running", 1, 9)
        assert w["mailbox"]["depth"] == 0
        assert w["lastFailure"]["message"] == "it broke"  # kept after the restart


async def test_a_mailbox_depth_counts_queued_messages_only(autojump_clock: Any) -> None:
    log = Log()
    async with open_test_system(tree_of(log)) as system:
        ref = system.ref("root/w")
        await ref.tell(("sleep", 5))
        await settle()
        assert system.tree()["children"][0]["mailbox"]["depth"] == 0
        await ref.tell("a")
        await ref.tell("b")
        assert system.tree()["children"][0]["mailbox"]["depth"] == 2


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
        t, sub = snapshot["children"]
        assert (t["state"], t["restarts"], t["lastFailure"]["type"]) == ("stopped", 0, "Boom")
        x = sub["children"][0]
        assert (x["path"], x["state"], x["restarts"], x["lastFailure"]["type"]) == (
            "root/sub/x", "running", 1, "InjectedCrash",
        )
        assert (sub["restarts"], sub["lastFailure"]) == (0, None)
