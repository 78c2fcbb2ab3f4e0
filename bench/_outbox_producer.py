"""The load of bench/outbox.py's freshness figure, in its own process (as a web process is): upload-shaped
commits (a sample row, the user's watermark bump and a ``health.samples.changed`` event in one transaction)
paced at RATE/s for SECONDS over USERS users by several concurrent producers.

    .venv/bin/python bench/_outbox_producer.py DATABASE_URL RATE SECONDS USERS

Prints one JSON line: ``{"commits": [[user, mark, t], ...], "rate": achieved}`` where ``t`` is
``time.perf_counter()`` right after COMMIT (CLOCK_MONOTONIC: comparable with the measuring process).
"""

from __future__ import annotations

import json
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
PRODUCERS = 24


async def main(url: str, rate: float, seconds: float, users: int) -> None:
    commits: list[tuple[str, int, float]] = []
    async with trio_asyncio.open_loop(), open_store(url, config=StoreConfig(pg_max_size=PRODUCERS)) as store:
        total = int(rate * seconds)
        t0 = time.perf_counter()

        async def produce(k: int) -> None:
            rng = random.Random(k)
            for i in range(k, total, PRODUCERS):
                await trio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
                user = f"v{i % users}"
                at = EPOCH + timedelta(minutes=i)
                row = SampleIn("watch", f"r{i}", "steps", float(rng.randint(1, 99)), "count", at,
                               at + timedelta(minutes=1))
                async with store.transaction() as tx:
                    (_, mark) = await tx.run(tx.samples.upsert_many(user, [row]), tx.watermarks.bump(user, 1))
                    await tx.commit(tx.outbox.enqueue(user, "health.samples.changed", {
                        "watermark": {"from": mark - 1, "to": mark},
                        "keys": [{"metric": "steps", "date": at.date().isoformat()}]}))
                commits.append((user, mark, time.perf_counter()))

        async with trio.open_nursery() as nursery:
            for k in range(PRODUCERS):
                nursery.start_soon(produce, k)
        achieved = len(commits) / (time.perf_counter() - t0)
    print(json.dumps({"commits": commits, "rate": achieved}))


if __name__ == "__main__":
    trio.run(main, sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]))
