"""Sync on PostgreSQL with several "server processes": each one an application (supervision tree, device actors,
HTTP app) over its own store — its own connection pool — on one shared schema, as separate processes would be.

- a device's pushes serialize across processes (the transaction-scoped advisory lock on (user, device)),
  while other devices go on;
- concurrent writers on every process and a puller lose nothing and see nothing twice (the per-user sequence
  commits in order);
- concurrent replays of one operation id through two processes apply it once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace

import pytest
import trio
import trio.lowlevel
import trio_asyncio

from storage import StoreConfig, open_store
from tests.ingest_helpers import Harness
from tests.sync_helpers import Device, app_over, op

pytestmark = pytest.mark.postgres


@asynccontextmanager
async def processes(dsn: str, schema: str, n: int = 2) -> AsyncIterator[list[Harness]]:
    config = StoreConfig(seed=7, pg_schema=schema, pg_max_size=8)
    async with trio_asyncio.open_loop(), AsyncExitStack() as stack:
        apps = []
        for i in range(n):
            store = await stack.enter_async_context(open_store(dsn, config=replace(config, seed=i)))
            apps.append(await stack.enter_async_context(app_over(store)))
        yield apps


async def test_a_devices_pushes_serialize_across_processes_and_other_devices_go_on(
        postgres_dsn: str, postgres_schema: str) -> None:
    async with processes(postgres_dsn, postgres_schema) as (one, two):
        phone, tablet = Device(one.client, "alice", "phone"), Device(two.client, "alice", "tablet")
        await phone.push(op("journal_entry", "j0", data={"text": "first"}))
        done = trio.Event()
        # A third party (another process's transaction) holds the phone's lock...
        async with one.store.transaction() as holder:
            await holder.devices.lock("alice", "phone")

            async def blocked() -> None:
                await Device(two.client, "alice", "phone").push(op("journal_entry", "j1", data={"text": "x"}))
                done.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(blocked)
                await trio.sleep(0.5)
                assert not done.is_set(), "a push for a locked device went ahead"
                # ...while another device of the same user pushes through either process.
                with trio.fail_after(10):
                    (other,) = await tablet.push(op("journal_entry", "j2", data={"text": "y"}))
                assert other["status"] == "applied"
                await holder.commit()
                with trio.fail_after(10):
                    await done.wait()
        ids = [c["entityId"] for c in await Device(one.client, "alice", "reader").pull_all()]
        assert ids == ["j0", "j2", "j1"]


async def test_one_operation_replayed_through_two_processes_at_once_applies_once(
        postgres_dsn: str, postgres_schema: str) -> None:
    async with processes(postgres_dsn, postgres_schema) as (one, two):
        results: list[dict[str, object]] = []
        same = op("journal_entry", "j1", data={"text": "once"}, op_id="op-once")

        async def push(h: Harness) -> None:
            results.extend(await Device(h.client, "alice", "phone").push(same))

        async with trio.open_nursery() as nursery:
            for h in (one, two, one, two):
                nursery.start_soon(push, h)
        assert len(results) == 4 and all(r == results[0] for r in results)
        assert results[0]["status"] == "applied"
        assert len(await Device(two.client, "alice", "reader").pull_all()) == 1


async def test_concurrent_writers_and_pulls_lose_nothing(postgres_dsn: str, postgres_schema: str) -> None:
    writers_per_process, pushes = 3, 15
    async with processes(postgres_dsn, postgres_schema) as apps:
        expected: set[str] = set()
        reader = Device(apps[0].client, "alice", "reader")
        pulled: list[str] = []
        writing = True

        async def writer(h: Harness, name: str) -> None:
            device = Device(h.client, "alice", name)
            for i in range(pushes):
                entity = f"{name}-{i}"
                ops = [op("consumption_session", entity, data={"status": "active", "count": i})]
                if i % 3 == 0:  # a shared entity too: updates race across devices and processes
                    ops.append(op("journal_entry", f"{name}-shared-{i}", data={"text": name}))
                results = await device.push(*ops)
                assert all(r["status"] == "applied" for r in results), results
                expected.update(r["entity"]["entityId"] for r in results)

        async def puller() -> None:
            while writing:
                pulled.extend(c["entityId"] for c in await reader.pull_all(limit=7))
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(puller)
            async with trio.open_nursery() as writers:
                for p, h in enumerate(apps):
                    for w in range(writers_per_process):
                        writers.start_soon(writer, h, f"p{p}w{w}")
            writing = False
        pulled.extend(c["entityId"] for c in await reader.pull_all())
        assert len(pulled) == len(set(pulled)), "a change was pulled twice"
        assert set(pulled) == expected, f"missing {sorted(expected - set(pulled))[:10]}"
