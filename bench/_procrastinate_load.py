"""procrastinate (PyPI) beside Vigil's outbox in bench/outbox.py: defer N no-op jobs, then run them.

    .venv/bin/python bench/_procrastinate_load.py DSN N CONCURRENCY

Runs in its own process (procrastinate is asyncio + psycopg). Prints one JSON line:
``{"jobs", "defer_s", "run_s", "defer_per_s", "jobs_per_s"}``. The jobs are deferred in batches of
1,000 (``batch_defer_async``, its fastest way in), then one worker with ``concurrency`` slots runs
them until the queue is empty (``wait=False``); ``jobs_per_s`` is that run's rate.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time

import procrastinate


def main() -> None:
    dsn, count, concurrency = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    logging.basicConfig(level=logging.WARNING)
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(name="noop")
    async def noop(i: int) -> None:
        return None

    async def run() -> dict[str, float]:
        async with app.open_async():
            await app.schema_manager.apply_schema_async()
            t0 = time.perf_counter()
            for first in range(0, count, 1000):
                await noop.batch_defer_async(*({"i": i} for i in range(first, min(count, first + 1000))))
            t1 = time.perf_counter()
            await app.run_worker_async(concurrency=concurrency, wait=False, install_signal_handlers=False)
            t2 = time.perf_counter()
        return {"jobs": count, "defer_s": t1 - t0, "run_s": t2 - t1, "defer_per_s": count / (t1 - t0),
                "jobs_per_s": count / (t2 - t1)}

    print(json.dumps(asyncio.run(run())))


if __name__ == "__main__":
    main()
