"""``SyncService`` over the kernel API: device actors are passivated when idle and come back on demand; a device's
pushes apply in order. SQLite under trio's MockClock (asks never time out: virtual time jumps while the database
thread works)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
import trio.testing

from actors.sync import Operation, SyncConfig, SyncDomain, SyncService
from kernel import ActorSystem, Supervisor
from storage import open_store


@asynccontextmanager
async def service(tmp_path: Path, **config: Any) -> AsyncIterator[tuple[SyncService, ActorSystem]]:
    async with open_store(f"sqlite:///{tmp_path / 's.db'}") as store:
        domain = SyncDomain(store, SyncConfig(ask_timeout=math.inf, **config))
        async with ActorSystem.start(Supervisor("root", children=[domain.subtree()]), seed=2) as system:
            yield domain.service(system), system
            await system.stop()


def create(entity_id: str, text: str = "t") -> Operation:
    return Operation(op_id=f"op-{entity_id}", entity_type="journal_entry", entity_id=entity_id, op="create",
                     base_version=0, data={"text": text})


async def test_an_idle_device_actor_is_passivated_and_started_again_on_demand(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    async with service(tmp_path, device_idle_timeout=10.0) as (sync, system):
        devices = system.node("root/sync/devices")
        (result,) = await sync.push("alice", "phone", [create("j1")])
        assert result["status"] == "applied"
        assert devices.live == 1  # type: ignore[attr-defined]
        await trio.sleep(10.5)
        assert devices.live == 0 and devices.passivated == 1  # type: ignore[attr-defined]
        (again,) = await sync.push("alice", "phone", [create("j2")])
        assert again["status"] == "applied" and devices.live == 1  # type: ignore[attr-defined]
        page = await sync.pull("alice", "phone", None)
        assert [c.entity_id for c in page.changes] == ["j1", "j2"]


async def test_a_devices_concurrent_pushes_apply_in_the_order_they_arrive(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    async with service(tmp_path) as (sync, _):
        await sync.push("alice", "phone", [create("j")])
        order: list[int] = []

        async def update(i: int, base: int) -> None:
            (r,) = await sync.push("alice", "phone", [Operation(
                op_id=f"u{i}", entity_type="journal_entry", entity_id="j", op="update", base_version=base,
                data={"text": str(i)})])
            order.append(r["entity"]["version"])

        async with trio.open_nursery() as nursery:
            for i in range(5):
                nursery.start_soon(update, i, i + 1)
                await trio.testing.wait_all_tasks_blocked()
        # Each update was based on the version the previous one made: serialized, none a conflict.
        assert sorted(order) == [2, 3, 4, 5, 6]
        page = await sync.pull("alice", "tablet", None)
        assert [c.data for c in page.changes][1:] == [{"text": str(i), "tags": []} for i in range(5)]
