"""The load of bench/outbox.py's freshness figure, in its own process (as a web process is): upload-shaped
changes (a sample row, the user's watermark bump and a ``health.samples.changed`` event naming the bump's range
and the sample's (metric, day) key, with its NOTIFY) arriving at RATE/s for SECONDS over USERS users, committed
as a web process's hot lane commits them: one committer taking every change waiting (up to 32) into one
transaction (group commit).

    .venv/bin/python bench/_outbox_producer.py POSTGRES_DSN RATE SECONDS USERS

A load generator, so it is lean: plain asyncio and asyncpg, each group three multi-row statements writing the rows
the store would (samples, each user's bump once by the group's count of its changes, the events with the store's
content hash and their NOTIFY). Written through the store under trio-asyncio (a statement per change and op,
what a lane does for requests) with four committers it took ~1 ms of CPU a change, ~12 s of the 2-core machine's
CPU (with the database's) for 8,000 changes against ~7 s now: the figure measured the load generator's share of
the machine more than the read side's latency. What the web side costs is bench/ingest.py's figure.

Prints one JSON line: ``{"commits": [[user, mark, t], ...], "rate": achieved}`` where ``t`` is
``time.perf_counter()`` right after COMMIT (CLOCK_MONOTONIC: comparable with the measuring process).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import sys
import time
from datetime import UTC, datetime, timedelta

import asyncpg

EPOCH = datetime(2026, 11, 1, tzinfo=UTC)
GROUP = 32  # a hot lane's max_batch
CHANNEL = "vigil_outbox"  # StoreConfig.notify_channel (no schema)

_SAMPLES = (
    "INSERT INTO health_samples (user_id, source_id, source_record_id, start_at, end_at, metric, value, unit,"
    " metadata, created_at, updated_at)"
    " SELECT u, 'watch', r, s, s + interval '1 minute', 'steps', v, 'count', '{}'::jsonb, now(), now()"
    " FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::float8[]) AS k(u, r, s, v)"
)
_BUMP = (
    "INSERT INTO user_watermarks (user_id, watermark, updated_at) SELECT u, n, now()"
    " FROM unnest($1::text[], $2::bigint[]) AS k(u, n) ORDER BY u"
    " ON CONFLICT (user_id) DO UPDATE SET watermark = user_watermarks.watermark + excluded.watermark,"
    " updated_at = excluded.updated_at RETURNING user_id, watermark"
)
_EVENTS = (
    "WITH ins AS (INSERT INTO outbox_events (user_id, type, payload, event_hash, status, attempts, next_attempt_at,"
    " created_at, updated_at)"
    " SELECT u, 'health.samples.changed', p::jsonb, h, 'pending', 0, now(), now(), now()"
    " FROM unnest($1::text[], $2::text[], $3::text[]) AS k(u, p, h) RETURNING id)"
    " SELECT pg_notify($4, id::text) FROM ins"
)


def _hash(user: str, payload: object) -> str:
    """The store's event_hash: sha256 of the canonical (sorted-key) JSON of payload, type and user."""
    canonical = json.dumps({"payload": payload, "type": "health.samples.changed", "userId": user},
                           sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


async def main(dsn: str, rate: float, seconds: float, users: int) -> None:
    commits: list[tuple[str, int, float]] = []
    total = int(rate * seconds)
    queue: asyncio.Queue[tuple[str, int, datetime, float] | None] = asyncio.Queue()
    conn = await asyncpg.connect(dsn)
    t0 = time.perf_counter()

    async def arrive() -> None:
        # Uploads arrive at RATE/s whatever the commits are doing (an open-loop load).
        rng = random.Random(1)
        for i in range(total):
            await asyncio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
            queue.put_nowait((f"v{i % users}", i, EPOCH + timedelta(minutes=i), float(rng.randint(1, 99))))
        queue.put_nowait(None)

    async def commit() -> None:
        while (first := await queue.get()) is not None:
            group, ended = [first], False
            while len(group) < GROUP and not queue.empty():
                item = queue.get_nowait()
                if item is None:
                    ended = True
                    break
                group.append(item)
            per_user: dict[str, int] = {}
            for user, *_ in group:
                per_user[user] = per_user.get(user, 0) + 1
            async with conn.transaction():
                await conn.execute(_SAMPLES, [g[0] for g in group], [f"r{g[1]}" for g in group],
                                   [g[2] for g in group], [g[3] for g in group])
                marks = {r["user_id"]: int(r["watermark"])
                         for r in await conn.fetch(_BUMP, list(per_user), list(per_user.values()))}
                # A user's changes in the group take the marks (mark - count, mark] in arrival order.
                after = {user: marks[user] - count for user, count in per_user.items()}
                events: list[tuple[str, int, dict[str, object]]] = []
                for user, _, at, _ in group:
                    after[user] += 1
                    events.append((user, after[user], {"watermark": {"from": after[user] - 1, "to": after[user]},
                                                       "keys": [{"metric": "steps", "date": at.date().isoformat()}]}))
                await conn.execute(_EVENTS, [e[0] for e in events], [json.dumps(e[2]) for e in events],
                                   [_hash(e[0], e[2]) for e in events], CHANNEL)
            done = time.perf_counter()
            commits.extend((user, mark, done) for user, mark, _ in events)
            if ended:
                return

    try:
        await asyncio.gather(arrive(), commit())
    finally:
        await conn.close()
    achieved = len(commits) / (time.perf_counter() - t0)
    print(json.dumps({"commits": commits, "rate": achieved}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])))
