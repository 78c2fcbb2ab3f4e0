"""Guarantees that need real OS processes: durability across SIGKILL, cross-process locks
and claims. Children are small scripts run with this interpreter."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio

from storage import StoreConfig, open_store

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
USER = "user-1"

_PRELUDE = """
import sys, trio
from datetime import UTC, datetime, timedelta
from storage import SampleIn, StoreConfig, open_store

def config(schema):
    return StoreConfig(pg_schema=schema or None)
"""

# Commits batches of 20 samples + a watermark bump forever, printing each committed batch.
_WRITER = (
    _PRELUDE
    + """
async def main(url, schema):
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    async with open_store(url, config=config(schema)) as store:
        i = 0
        while True:
            rows = [SampleIn("watch", f"b{i}-{j}", "steps", 1.0, "count", t0 + timedelta(seconds=i * 20 + j),
                             t0 + timedelta(seconds=i * 20 + j)) for j in range(20)]
            async with store.transaction() as tx:
                await tx.commit(tx.samples.upsert_many("user-1", rows), tx.watermarks.bump("user-1"))
            print(i, flush=True)
            i += 1

trio.run(main, sys.argv[1], sys.argv[2])
"""
)

# Takes the device lock, says so, holds it until its stdin closes.
_LOCKER = (
    _PRELUDE
    + """
async def main(url, schema, device):
    async with open_store(url, config=config(schema)) as store:
        print("waiting", flush=True)
        async with store.device_lock("user-1", device):
            print("locked", flush=True)
            await trio.to_thread.run_sync(sys.stdin.read)

trio.run(main, sys.argv[1], sys.argv[2], sys.argv[3])
"""
)

# Claims until the outbox is drained, printing every claimed id.
_CLAIMER = (
    _PRELUDE
    + """
async def main(url, schema, name):
    async with open_store(url, config=config(schema)) as store:
        print("ready", flush=True)
        sys.stdin.readline()
        while True:
            async with store.transaction() as tx:
                batch = await tx.outbox.claim(name, limit=3)
                await trio.sleep(0.001)
            if not batch:
                break
            print(" ".join(str(e.id) for e in batch), flush=True)
            async with store.transaction() as tx:
                tx.defer(*(tx.outbox.complete(e.id, name) for e in batch))
            # SQLite's file lock is not fair between processes: leave the other one a gap.
            await trio.sleep(0.005)

trio.run(main, sys.argv[1], sys.argv[2], sys.argv[3])
"""
)


class Child:
    """A child process with line-oriented stdout."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self._buffer = b""

    async def line(self) -> str | None:
        assert self.process.stdout is not None
        while b"\n" not in self._buffer:
            chunk = await self.process.stdout.receive_some(4096)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    async def send(self, text: str) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(text.encode())


@asynccontextmanager
async def child(script: str, *args: str) -> AsyncIterator[Child]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    try:
        yield Child(process)
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    await stream.aclose()


async def test_sqlite_commits_survive_sigkill(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'vigil.db'}"
    acknowledged = -1
    with trio.fail_after(30):
        async with child(_WRITER, url, "") as writer:
            while acknowledged < 40:
                line = await writer.line()
                assert line is not None, "the writer died"
                acknowledged = int(line)
            writer.process.send_signal(signal.SIGKILL)
            await writer.process.wait()
            assert writer.process.returncode == -signal.SIGKILL
    # Every batch whose COMMIT returned is there, complete; nothing half-written.
    async with open_store(url) as store:
        async with store.transaction(readonly=True) as tx:
            marks = await tx.watermarks.get(USER)
            page = await tx.samples.query(USER, limit=10_000)
    batches = marks.watermark
    assert batches >= acknowledged + 1
    assert len(page.items) == 20 * batches
    stored = {s.source_record_id for s in page.items}
    assert {f"b{i}-{j}" for i in range(acknowledged + 1) for j in range(20)} <= stored


@pytest.mark.postgres
async def test_advisory_device_lock_serializes_two_processes(postgres_dsn: str, postgres_schema: str) -> None:
    args = (postgres_dsn, postgres_schema)
    with trio.fail_after(60):
        async with open_store(postgres_dsn, config=StoreConfig(pg_schema=postgres_schema)) as store:
            async with AsyncExitStack() as children:
                async with store.device_lock(USER, "phone"):
                    tablet = await children.enter_async_context(child(_LOCKER, *args, "tablet"))
                    assert await tablet.line() == "waiting"
                    assert await tablet.line() == "locked"  # another device is not blocked
                    phone = await children.enter_async_context(child(_LOCKER, *args, "phone"))
                    assert await phone.line() == "waiting"
                    with trio.move_on_after(1.0) as held_off:
                        await phone.line()
                    assert held_off.cancelled_caught, "the other process got the lock while we held it"
                # We released: the waiting process gets it, and now we are the ones who wait.
                assert await phone.line() == "locked"
                with trio.move_on_after(0.5) as we_waited:
                    async with store.device_lock(USER, "phone"):
                        pass
                assert we_waited.cancelled_caught
                assert phone.process.stdin is not None
                await phone.process.stdin.aclose()  # the child leaves its lock block and exits
                async with store.device_lock(USER, "phone"):
                    pass


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_two_processes_never_claim_the_same_event(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        url, schema = f"sqlite:///{tmp_path / 'vigil.db'}", ""
    else:
        url, schema = request.getfixturevalue("postgres_dsn"), request.getfixturevalue("postgres_schema")
    async with open_store(url, config=StoreConfig(pg_schema=schema or None)) as store:
        async with store.transaction() as tx:
            tx.defer(*(tx.outbox.enqueue(USER, "e", {"i": i}) for i in range(90)))
    claimed: dict[str, list[int]] = {"a": [], "b": []}

    async def drain(worker: Child, name: str) -> None:
        while (line := await worker.line()) is not None:
            claimed[name] += [int(x) for x in line.split()]

    with trio.fail_after(60):
        async with child(_CLAIMER, url, schema, "a") as a, child(_CLAIMER, url, schema, "b") as b:
            assert await a.line() == "ready" and await b.line() == "ready"
            await a.send("go\n")
            await b.send("go\n")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(drain, a, "a")
                nursery.start_soon(drain, b, "b")
    everything = claimed["a"] + claimed["b"]
    assert len(everything) == len(set(everything)) == 90
    assert claimed["a"] and claimed["b"], "both processes should have claimed some"
