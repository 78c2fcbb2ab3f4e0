"""The load of bench/outbox.py's freshness figure, in its own process (as a web process is): upload-shaped
changes (a sample row, the user's watermark bump and a ``health.samples.changed`` event) arriving at RATE/s for
SECONDS over USERS users, committed as the ingest lanes commit them: a few committers, each taking every change
waiting (up to 32) into one transaction (group commit).

    .venv/bin/python bench/_outbox_producer.py DATABASE_URL RATE SECONDS USERS

Prints one JSON line: ``{"commits": [[user, mark, t], ...], "rate": achieved}`` where ``t`` is
``time.perf_counter()`` right after COMMIT (CLOCK_MONOTONIC: comparable with the measuring process).
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trio  # noqa: E402
import trio_asyncio  # noqa: E402

from storage import SampleIn, StoreConfig, open_store  # noqa: E402

EPOCH = datetime(2026, 11, 1, tzinfo=UTC)
COMMITTERS = 4  # like the ingest lanes: each commits whatever waits (up to GROUP) in one transaction
GROUP = 32


async def main(url: str, rate: float, seconds: float, users: int) -> None:
    commits: list[tuple[str, int, float]] = []
    total = int(rate * seconds)
    send, receive = trio.open_memory_channel[tuple[str, SampleIn]](math.inf)
    async with trio_asyncio.open_loop(), open_store(url, config=StoreConfig(pg_max_size=COMMITTERS)) as store:
        t0 = time.perf_counter()

        async def arrive() -> None:
            # Uploads arrive at RATE/s whatever the commits are doing (an open-loop load).
            rng = random.Random(1)
            async with send:
                for i in range(total):
                    await trio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
                    at = EPOCH + timedelta(minutes=i)
                    send.send_nowait((f"v{i % users}", SampleIn("watch", f"r{i}", "steps", float(rng.randint(1, 99)),
                                                               "count", at, at + timedelta(minutes=1))))

        async def commit() -> None:
            async for first in receive:
                group = [first]
                while len(group) < GROUP:
                    try:
                        group.append(receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                async with store.transaction() as tx:
                    results = await tx.run(*(op for user, row in group
                                             for op in (tx.samples.upsert_many(user, [row]),
                                                        tx.watermarks.bump(user, 1))))
                    marks = results[1::2]
                    await tx.commit(*(tx.outbox.enqueue(user, "health.samples.changed", {
                        "watermark": {"from": mark - 1, "to": mark},
                        "keys": [{"metric": "steps", "date": row.start_at.date().isoformat()}]})
                        for (user, row), mark in zip(group, marks, strict=True)))
                done = time.perf_counter()
                commits.extend((user, mark, done) for (user, _), mark in zip(group, marks, strict=True))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(arrive)
            for _ in range(COMMITTERS):
                nursery.start_soon(commit)
        achieved = len(commits) / (time.perf_counter() - t0)
    print(json.dumps({"commits": commits, "rate": achieved}))


if __name__ == "__main__":
    trio.run(main, sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]))
