"""Sync: push and pull throughput on SQLite and PostgreSQL, WebSocket fan-out latency, memory.

    .venv/bin/python bench/sync.py [--quick]

Every figure is measured in this run, beside the reference it is compared with:

- ``sqlite_push_ops_per_s`` / ``pg_push_ops_per_s``: 1,000 devices across 100 users pushing concurrently through
  ``SyncService.push`` (admission, the device's keyed actor, one transaction per push: device lock, user lock,
  op-id lookup, merge, entities, change log, an outbox event per change, stored results; the committer groups
  the pushes queued at once into one transaction), ``--rounds`` pushes of ``--ops`` creates each per device.
  Reference ``*_raw_push_ops_per_s``: the same transaction scripts, one transaction per push, run by the same
  number of tasks straight on the store (no facade, no actors, no group commit).
- ``pg_pull_changes_per_s``: a new device of each of the 100 users pulling the user's whole change log (pages of
  500, each page acknowledging the last) concurrently. Reference ``pg_raw_read_changes_per_s``: the same pages
  read by ``changes.read`` in bare transactions.
- ``ws_delivery_p50_ms`` / ``ws_delivery_p99_ms``: 1,000 trio-websocket clients (10 users x 100 devices) on the
  served application (hypercorn, SQLite, one process: server and clients share the CPU); pushes paced over a
  few seconds; commit (the publish right after it) -> the envelope read by each other device of the user. The
  clients run in a process of their own. Target p99 <= 100 ms.
- ``idle_device_actor_bytes``: traced memory (tracemalloc) per device actor left idle after its push (no task,
  no mailbox), over 5,000 devices. ``ws_connection_bytes``: the server process's RSS growth per open WebSocket
  connection (hypercorn, the realtime room, the send buffer).

PostgreSQL: a fresh schema ``bench_sync_<pid>`` in VIGIL_BENCH_PG_DSN (default
postgresql://postgres@127.0.0.1:5432/test), dropped afterwards. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import hypercorn.trio  # noqa: E402
import trio  # noqa: E402
import trio_asyncio  # noqa: E402
from hypercorn.config import Config as HypercornConfig  # noqa: E402
from trio_websocket import open_websocket_url  # noqa: E402

from actors.supervisor import TreeConfig, application  # noqa: E402
from actors.sync import (  # noqa: E402
    Operation,
    SyncConfig,
    SyncDomain,
    SyncService,
    _apply,  # noqa: E402
)
from actors.sync._committer import Unit, batch_script  # noqa: E402
from kernel import ActorSystem, Supervisor  # noqa: E402
from storage import Store, StoreConfig, Transaction, open_store  # noqa: E402
from transport import Settings, create_app, issue_token  # noqa: E402

PG_DSN = os.environ.get("VIGIL_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
SECRET = "bench-sync-secret-" + "0123456789abcdef" * 3
perf = time.perf_counter


def ops_for(device: str, r: int, n: int) -> list[Operation]:
    return [Operation(op_id=f"{device}-{r}-{i}", entity_type="journal_entry", entity_id=f"{device}-{r}-{i}",
                      op="create", base_version=0, data={"text": "x" * 40, "tags": ["a"]}) for i in range(n)]


@asynccontextmanager
async def sync_system(store: Store, **config: Any) -> AsyncIterator[tuple[SyncService, ActorSystem]]:
    domain = SyncDomain(store, SyncConfig(**{"max_in_flight": 4096, **config}))
    async with ActorSystem.start(Supervisor("root", children=[domain.subtree()]), seed=1) as system:
        yield domain.service(system), system
        await system.stop()


async def push_phase(store: Store, users: int, devices: int, rounds: int, n: int, tag: str) -> dict[str, float]:
    names = [(f"{tag}u{d % users}", f"d{d}") for d in range(devices)]
    async with sync_system(store) as (service, _):
        async def device(user: str, dev: str) -> None:
            for r in range(rounds):
                await service.push(user, dev, ops_for(f"{tag}{dev}", r, n))

        started = perf()
        async with trio.open_nursery() as nursery:
            for user, dev in names:
                nursery.start_soon(device, user, dev)
        elapsed = perf() - started
    total = devices * rounds * n

    # The reference: the same scripts, the same concurrency, straight on the store.
    policies = SyncConfig().policies
    probe = SyncService.__new__(SyncService)  # only _prepare is used: the facade's own validation
    probe._policies = policies  # type: ignore[attr-defined]

    async def raw_device(user: str, dev: str) -> None:
        for r in range(rounds):
            ops = tuple(probe._prepare(o) for o in ops_for(f"{tag}raw{dev}", r, n))

            unit = Unit(user_id=user, device_id=dev,
                        build=lambda tx, ops=ops: _apply.push(tx, user, dev, ops, None, policies))

            async def work(tx: Transaction, unit: Unit = unit) -> Any:
                return await tx.commit(tx.script(batch_script(tx, [unit])))

            await store.transact(work)

    started = perf()
    async with trio.open_nursery() as nursery:
        for user, dev in names:
            nursery.start_soon(raw_device, user, dev)
    raw = perf() - started
    return {"ops_per_s": total / elapsed, "raw_ops_per_s": total / raw, "ops": total}


async def pull_phase(store: Store, users: int, tag: str) -> dict[str, float]:
    async with sync_system(store) as (service, _):
        counts = [0] * users

        async def reader(u: int) -> None:
            cursor = None
            while True:
                page = await service.pull(f"{tag}u{u}", "reader", cursor, 500)
                counts[u] += len(page.changes)
                cursor = page.next_cursor
                if not page.has_more:
                    return

        started = perf()
        async with trio.open_nursery() as nursery:
            for u in range(users):
                nursery.start_soon(reader, u)
        elapsed = perf() - started

    async def raw_reader(u: int) -> None:
        after = 0
        while True:
            async with store.transaction(readonly=True) as tx:
                rows = await tx.changes.read(f"{tag}u{u}", after_seq=after, limit=500)
            if not rows:
                return
            after = rows[-1].seq

    started = perf()
    async with trio.open_nursery() as nursery:
        for u in range(users):
            nursery.start_soon(raw_reader, u)
    raw = perf() - started
    return {"changes_per_s": sum(counts) / elapsed, "raw_per_s": sum(counts) / raw, "changes": sum(counts)}


async def idle_actor_bytes(store: Store, n: int) -> float:
    async with sync_system(store, device_idle_timeout=3600.0) as (service, _):
        await service.push("warm", "warm", ops_for("warm", 0, 1))
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        limit = trio.Semaphore(64)

        async def one(i: int) -> None:
            async with limit:
                await service.pull(f"m{i % 100}", f"d{i}", None, 1)  # one message: the actor exists, then idles

        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(one, i)
        await trio.sleep(0.2)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        return (after - before) / n


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


class Stamps:
    """The publisher between the sync facade and the realtime hub: notes when each event was published."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.at: dict[str, float] = {}

    def sync_changed(self, **kw: Any) -> None:
        self.at[kw["event_id"]] = perf()
        self.inner.sync_changed(**kw)


async def ws_clients(port: int, users: int, per_user: int, expected: int) -> None:
    """The client process (``--ws-clients``): connect everyone, say READY, then print each envelope's arrival."""
    arrivals: list[tuple[str, float]] = []
    ready = trio.Semaphore(0)
    done = trio.Event()

    async def client(user: str, device: str) -> None:
        url = f"ws://127.0.0.1:{port}/v1/ws?token={issue_token(SECRET, user)}&deviceId={device}"
        async with open_websocket_url(url) as ws:
            await ws.send_message('{"type":"ping"}')
            await ws.get_message()
            ready.release()
            while not done.is_set():
                with trio.move_on_after(0.5):
                    envelope = json.loads(await ws.get_message())
                    # The read side speaks on the same sockets (health.projection.updated): count sync only.
                    if envelope["type"] != "sync.changed":
                        continue
                    arrivals.append((envelope["eventId"], perf()))
                    if len(arrivals) >= expected:
                        done.set()

    async with trio.open_nursery() as nursery:
        for u in range(users):
            for d in range(per_user):
                nursery.start_soon(client, f"w{u}", f"d{d}")
        for _ in range(users * per_user):
            await ready.acquire()
        print("READY", flush=True)
        with trio.move_on_after(120):
            await done.wait()
        done.set()
    print(json.dumps(arrivals), flush=True)


async def ws_phase(tmp: Path, users: int, per_user: int, pushes: int, pace: float) -> dict[str, float]:
    """The server in this process, the 1,000 clients in another (perf_counter is CLOCK_MONOTONIC: one clock)."""
    async with open_store(f"sqlite:///{tmp / 'ws.db'}") as store:
        config = replace(TreeConfig(), sync=SyncConfig(max_in_flight=4096))
        parts = application(store, config)
        async with ActorSystem.start(parts.tree, seed=1) as system, trio.open_nursery() as nursery:
            services = parts.services(system)
            stamps = Stamps(services.realtime)
            services = replace(services, sync=parts.sync.service(system, under="root", publisher=stamps))
            app = create_app(Settings(jwt_secret=SECRET, ops_token="o" * 40), system=system, services=services)
            hc = HypercornConfig()
            port = free_port()
            hc.bind = [f"127.0.0.1:{port}"]
            hc.accesslog = None
            hc.graceful_timeout = 1.0
            hc.backlog = 2048
            stop = trio.Event()
            await nursery.start(lambda task_status: hypercorn.trio.serve(app, hc, shutdown_trigger=stop.wait,
                                                                         task_status=task_status))
            expected = pushes * (per_user - 1)
            gc.collect()
            rss_before = rss_bytes()
            proc = await trio.lowlevel.open_process(
                [sys.executable, __file__, "--ws-clients", f"{port},{users},{per_user},{expected}"],
                stdout=subprocess.PIPE)
            assert proc.stdout is not None
            lines = LineReader(proc.stdout)
            with trio.fail_after(300):
                assert await lines.next() == "READY"
            gc.collect()
            conn_bytes = (rss_bytes() - rss_before) / (users * per_user)
            for i in range(pushes):
                await services.sync.push(f"w{i % users}", f"d{i % per_user}", ops_for(f"ws{i}", 0, 1))
                await trio.sleep(pace)
            with trio.fail_after(180):
                arrivals = json.loads(await lines.next())
                await proc.wait()
            stop.set()
            await system.stop()
    latencies = sorted(at - stamps.at[event] for event, at in arrivals if event in stamps.at)
    return {"p50_ms": 1000 * statistics.median(latencies) if latencies else float("nan"),
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies
            else float("nan"),
            "delivered": len(latencies), "expected": expected, "connection_bytes": conn_bytes}


class LineReader:
    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._buffer = b""

    async def next(self) -> str:
        while b"\n" not in self._buffer:
            chunk = await self._stream.receive_some(1 << 16)
            if not chunk:
                raise EOFError("the client process ended")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def pg_phases(args: argparse.Namespace, schema: str) -> dict[str, Any]:
    async with trio_asyncio.open_loop(), open_store(PG_DSN, config=StoreConfig(pg_schema=schema,
                                                                               pg_max_size=20)) as store:
        push = await push_phase(store, 100, args.devices, args.rounds, args.ops, "pg")
        pull = await pull_phase(store, 100, "pg")
        async with store.transaction() as tx:
            await tx.run()
        return {"push": push, "pull": pull}


async def drop_schema(schema: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(PG_DSN, timeout=5)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    async with trio_asyncio.open_loop():
        await trio_asyncio.aio_as_trio(run)()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller counts (a smoke run)")
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=None, help="pushes per device")
    parser.add_argument("--ops", type=int, default=5, help="operations per push")
    parser.add_argument("--ws-clients", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ws_clients:
        port, users, per_user, expected = (int(x) for x in args.ws_clients.split(","))
        trio.run(ws_clients, port, users, per_user, expected)
        return
    args.rounds = args.rounds or (2 if args.quick else 5)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        async def sqlite_phases() -> dict[str, Any]:
            async with trio_asyncio.open_loop(), open_store(f"sqlite:///{Path(tmp) / 'push.db'}") as store:
                push = await push_phase(store, 100, args.devices, args.rounds, args.ops, "sq")
                idle = await idle_actor_bytes(store, 1000 if args.quick else 5000)
                return {"push": push, "idle": idle}

        sq = trio.run(sqlite_phases)
        out["sqlite_push_ops_per_s"] = round(sq["push"]["ops_per_s"])
        out["sqlite_raw_push_ops_per_s"] = round(sq["push"]["raw_ops_per_s"])
        out["sqlite_push_ratio"] = round(sq["push"]["ops_per_s"] / sq["push"]["raw_ops_per_s"], 3)
        out["idle_device_actor_bytes"] = round(sq["idle"])
        print(f"sqlite push: {out['sqlite_push_ops_per_s']:,} ops/s ({sq['push']['ops']:,} ops, {args.devices} devices"
              f" / 100 users); raw scripts {out['sqlite_raw_push_ops_per_s']:,} ops/s (ratio {out['sqlite_push_ratio']})")
        print(f"idle device actor: {out['idle_device_actor_bytes']:,} bytes (tracemalloc)")

        schema = f"bench_sync_{os.getpid()}"
        try:
            pg = trio.run(pg_phases, args, schema)
            out["pg_push_ops_per_s"] = round(pg["push"]["ops_per_s"])
            out["pg_raw_push_ops_per_s"] = round(pg["push"]["raw_ops_per_s"])
            out["pg_push_ratio"] = round(pg["push"]["ops_per_s"] / pg["push"]["raw_ops_per_s"], 3)
            out["pg_pull_changes_per_s"] = round(pg["pull"]["changes_per_s"])
            out["pg_raw_read_changes_per_s"] = round(pg["pull"]["raw_per_s"])
            out["pg_pull_ratio"] = round(pg["pull"]["changes_per_s"] / pg["pull"]["raw_per_s"], 3)
            print(f"pg push: {out['pg_push_ops_per_s']:,} ops/s; raw scripts {out['pg_raw_push_ops_per_s']:,} ops/s "
                  f"(ratio {out['pg_push_ratio']})")
            print(f"pg pull: {out['pg_pull_changes_per_s']:,} changes/s ({pg['pull']['changes']:,}); raw reads "
                  f"{out['pg_raw_read_changes_per_s']:,}/s (ratio {out['pg_pull_ratio']})")
        except OSError as exc:
            print(f"PostgreSQL unreachable at {PG_DSN}: {exc}")
            out.update(pg_push_ops_per_s=None, pg_pull_changes_per_s=None)
        finally:
            try:
                trio.run(drop_schema, schema)
            except OSError:
                pass

        async def ws() -> dict[str, Any]:
            async with trio_asyncio.open_loop():
                return await ws_phase(Path(tmp), 10, 100, 20 if args.quick else 60, 0.05)

        w = trio.run(ws)
        out["ws_delivery_p50_ms"] = round(w["p50_ms"], 2)
        out["ws_delivery_p99_ms"] = round(w["p99_ms"], 2)
        out["ws_delivery_p99_limit_ms"] = 100
        out["ws_delivery_p99_ratio"] = round(w["p99_ms"] / 100, 3)
        out["ws_delivered"] = w["delivered"]
        out["ws_expected"] = w["expected"]
        out["ws_connection_bytes"] = round(w["connection_bytes"])
        print(f"ws fan-out: 1,000 clients, p50 {out['ws_delivery_p50_ms']} ms, p99 {out['ws_delivery_p99_ms']} ms "
              f"({w['delivered']:,}/{w['expected']:,} delivered)  [target p99 <= 100 ms, ratio "
              f"{out['ws_delivery_p99_ratio']}]")
        print(f"ws connection: {out['ws_connection_bytes']:,} bytes of server RSS each")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
