"""Session read models: how fast the pipeline recomputes session impact (and product impact after it).

    .venv/bin/python bench/impact.py [--quick] [--skip-pg]

On SQLite (a temp file) and PostgreSQL (a fresh database ``vigil_bench_impact_<pid>``, admin DSN
VIGIL_BENCH_PG_ADMIN_DSN, default postgresql://postgres@127.0.0.1:5432/postgres, dropped afterwards). USERS users
each have a day of heart rate (one sample every 5 minutes) and SESSIONS ended consumption sessions of an hour
(two products), each written as an applied sync change commits it (entity + change + ``sync.entity.changed``).

- ``*_session_impacts_per_s``: those events, one per session, run through the projection pipeline (dispatcher
  -> session_impact -> product_impact, which waits for it) until product impact has completed every one.
- reference ``*_raw_window_reads_per_s``: the same sessions' three-hour heart-rate windows read back through the
  store (``samples.for_projection_many``, 500 windows per call, no pipeline): the least any recompute must read.
  ``*_vs_raw`` is the ratio (pipeline rate / raw rate).

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import trio  # noqa: E402
import trio_asyncio  # noqa: E402

from actors.projection import (  # noqa: E402
    SESSION,
    SYNC_ENTITY_CHANGED,
    DispatcherConfig,
    HandlerConfig,
    ProductImpacts,
    ProjectionConfig,
    ProjectionDomain,
    SessionImpacts,
)
from bench.ingest import db_url, pg_admin  # noqa: E402
from kernel import ActorSystem, Supervisor  # noqa: E402
from storage import ChangeIn, SampleIn, Store, SyncEntity, migrate, open_store  # noqa: E402

perf = time.perf_counter
ADMIN_DSN = os.environ.get("VIGIL_BENCH_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
DAY = datetime(2026, 11, 24, tzinfo=UTC)
HOUR = timedelta(hours=1)


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


async def seed(store: Store, users: int, sessions: int) -> list[tuple[str, datetime, datetime]]:
    """Heart rate and sessions; returns every session's (user, read-window start, end)."""
    windows = []
    for u in range(users):
        user = f"u{u}"
        rows = [SampleIn("watch", f"h{i}", "heart_rate", 60.0 + (i * 7 + u) % 60, "bpm",
                         DAY + timedelta(minutes=5 * i), DAY + timedelta(minutes=5 * i)) for i in range(288)]
        entities, changes = [], []
        for s in range(sessions):
            start = DAY + timedelta(minutes=(1380 * s) // max(1, sessions))
            data = {"status": "ended", "count": 1, "productId": f"p{s % 2}", "startAt": _iso(start),
                    "endAt": _iso(start + HOUR)}
            entities.append(SyncEntity(user, SESSION, f"s{s}", 1, data))
            changes.append(ChangeIn(SESSION, f"s{s}", "create", 1, data))
            windows.append((user, start - HOUR, start + 2 * HOUR))
        async with store.transaction() as tx:
            await tx.run(tx.samples.upsert_many(user, rows), tx.entities.put_many(entities),
                         tx.changes.append_many(user, changes))
            await tx.commit(*(tx.outbox.enqueue(user, SYNC_ENTITY_CHANGED, {
                "entityType": SESSION, "entityId": e.entity_id, "version": 1, "op": "create", "deleted": False,
                "deviceId": "bench", "data": e.data}) for e in entities))
    return windows


async def pipeline_rate(store: Store, events: int) -> float:
    config = ProjectionConfig(dispatcher=DispatcherConfig(batch=500, poll_interval=0.2),
                              handler=HandlerConfig(batch=500, poll_interval=0.2), figures_interval=3600.0)
    domain = ProjectionDomain(store, config, projections=[SessionImpacts(), ProductImpacts()])
    gate = domain.gates["product_impact"]
    async with ActorSystem.start(Supervisor("root", children=[domain.subtree()])) as system:
        t0 = perf()
        with trio.fail_after(900):
            while gate.completed < events:  # noqa: ASYNC110  (polling the pipeline's counter)
                await trio.sleep(0.005)
        elapsed = perf() - t0
        await system.stop()
    async with store.transaction(readonly=True) as tx:
        (impact,) = await tx.commit(tx.session_impacts.get("u0", "s0"))
    assert impact is not None and impact.stats["during"]["count"] > 0, impact
    return events / elapsed


async def raw_rate(store: Store, windows: list[tuple[str, datetime, datetime]]) -> float:
    t0 = perf()
    for first in range(0, len(windows), 500):
        async with store.transaction(readonly=True) as tx:
            await tx.commit(tx.samples.for_projection_many(
                [(user, "heart_rate", a, b) for user, a, b in windows[first:first + 500]]))
    return len(windows) / (perf() - t0)


async def measure(url: str, users: int, sessions: int) -> dict[str, float]:
    async with trio_asyncio.open_loop(), open_store(url) as store:
        windows = await seed(store, users, sessions)
        pipeline = await pipeline_rate(store, len(windows))
        raw = await raw_rate(store, windows)
    return {"session_impacts_per_s": round(pipeline), "raw_window_reads_per_s": round(raw),
            "vs_raw": round(pipeline / raw, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller counts (a smoke run)")
    parser.add_argument("--skip-pg", action="store_true")
    args = parser.parse_args()
    users, sessions = (20, 10) if args.quick else (200, 20)
    out: dict[str, Any] = {"users": users, "sessions_per_user": sessions}
    with tempfile.TemporaryDirectory() as tmp:
        figures = trio.run(measure, f"sqlite:///{Path(tmp) / 'impact.db'}", users, sessions)
    out.update({f"sqlite_{k}": v for k, v in figures.items()})
    print(f"sqlite: {out['sqlite_session_impacts_per_s']:,} sessions/s through the pipeline; raw window reads "
          f"{out['sqlite_raw_window_reads_per_s']:,}/s ({out['sqlite_vs_raw']}x)")
    if not args.skip_pg:
        name = f"vigil_bench_impact_{os.getpid()}"
        try:
            trio.run(pg_admin, ADMIN_DSN, f'CREATE DATABASE "{name}"')
        except Exception as exc:  # noqa: BLE001 - an unreachable database is a note, not a crash
            print(f"PostgreSQL unreachable at {ADMIN_DSN}: {exc}")
            out.update({"pg_session_impacts_per_s": None, "pg_raw_window_reads_per_s": None, "pg_vs_raw": None})
        else:
            try:
                url = db_url(ADMIN_DSN, name)

                async def migrated() -> None:
                    async with trio_asyncio.open_loop():
                        await migrate(url)

                trio.run(migrated)
                figures = trio.run(measure, url, users, sessions)
                out.update({f"pg_{k}": v for k, v in figures.items()})
                print(f"postgresql: {out['pg_session_impacts_per_s']:,} sessions/s through the pipeline; raw window "
                      f"reads {out['pg_raw_window_reads_per_s']:,}/s ({out['pg_vs_raw']}x)")
            finally:
                trio.run(pg_admin, ADMIN_DSN, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(json.dumps(out))


if __name__ == "__main__":
    main()
