"""The read side on PostgreSQL: outbox dispatch, projection throughput, freshness latency, isolation.

    .venv/bin/python bench/outbox.py [--quick]

All on one fresh PostgreSQL database ``vigil_bench_outbox_<pid>`` (admin DSN VIGIL_BENCH_PG_ADMIN_DSN, default
postgresql://postgres@127.0.0.1:5432/postgres), migrated, dropped afterwards; the freshness figure on a second one. Every figure is measured in this
run, beside the reference it is compared with:

- ``outbox_events_per_s``: N due outbox events (400 users, each event one watermark step; the production batch
  sizes) claimed, fanned out
  and run through the projection pipeline (dispatcher: events leased -> the handler's worker in memory ->
  advanced watermark -> the dispatcher completes the events) with a no-op handler, from start to the last
  handler completion.
  Reference ``raw_claim_complete_per_s``: the same number of events taken by bare SQL in this process
  (``FOR UPDATE SKIP LOCKED`` 500 at a time, marked completed; asyncpg direct, no trio bridge) — the floor of
  any outbox on this database. Target: >= 20,000/s.
- ``procrastinate_jobs_per_s``: procrastinate (PyPI), in its own process on the same database, deferring N/4
  no-op jobs (batches of 1,000) and one worker running them (concurrency 10); Vigil / procrastinate >= 10x.
- ``projected_samples_per_s``: samples in the store whose (metric, day) keys events name, recomputed into
  daily rollups and sleep nights by the real projections, end to end. Reference ``raw_sample_read_per_s``:
  the same samples read back by one SELECT per user-metric (what a recompute must at least read).
- ``visible_p50_ms``/``visible_p99_ms``: commit of an upload-shaped change (sample rows, watermark bump and
  outbox event in one transaction) -> the read model reflecting it committed, paced at 1,000 events/s for a
  few seconds over 200 users (bench/_outbox_producer.py, a lean load generator in its own process; its first
  second warms up and is not counted). Measured
  in-process: the worker's "caught up" callback (what the realtime hub is told) against each commit's time.
  Target: p99 <= 50 ms.
- ``hot_p99_idle_ms``/``hot_p99_projecting_ms``: a web process (``run.py serve --role web``) answering one
  client's sequential 50-sample hot uploads, with its worker process (``--role worker``) idle and while it
  projects a fresh backlog flat out: alternating rounds, the median of each. Target: ratio <= 1.5.

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import trio  # noqa: E402
import trio_asyncio  # noqa: E402

from actors.ingest import tune_gc  # noqa: E402
from actors.projection import (  # noqa: E402
    DispatcherConfig,
    HandlerConfig,
    ProjectionConfig,
    ProjectionDomain,
    UserWork,
    default_projections,
)
from bench.ingest import PY, db_url, free_port, hot_config, load, pg_admin, server  # noqa: E402
from kernel import ActorSystem, Supervisor  # noqa: E402
from storage import SampleIn, StoreConfig, Transaction, migrate, open_store  # noqa: E402

perf = time.perf_counter
ADMIN_DSN = os.environ.get("VIGIL_BENCH_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
EPOCH = datetime(2026, 11, 1, tzinfo=UTC)


# --- helpers -----------------------------------------------------------------------------------------------
class NoOp:
    """A handler that does nothing: what is left is the pipeline's own cost."""

    name = "noop"
    depends_on = None

    def subscribes(self, event_type: str) -> bool:
        return True

    async def project(self, tx: Transaction, work: UserWork) -> None:
        return None


class Visibility:
    """The "read model caught up" callback: when each (user, watermark) became visible."""

    def __init__(self) -> None:
        self.seen: dict[str, list[tuple[int, float]]] = {}

    def projection_updated(self, *, user_id: str, handler: str, projected: int, correlation_id: str | None) -> None:
        if handler == "daily_rollups":
            self.seen.setdefault(user_id, []).append((projected, perf()))


def pct(values: Sequence[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


async def pg(dsn: str, sql: str, *args: Any, fetch: bool = False) -> Any:
    import asyncpg

    async def run() -> Any:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            return await (conn.fetch(sql, *args) if fetch else conn.execute(sql, *args))
        finally:
            await conn.close()

    return await trio_asyncio.aio_as_trio(run)()


async def seed_events(dsn: str, n: int, users: int, *, prefix: str = "u", keys: bool = False, days: int = 1,
                      first_mark: dict[str, int] | None = None) -> dict[str, int]:
    """``n`` due events straight into the tables (COPY), each one watermark step of its user; returns each
    user's last mark. ``keys``: name (steps, day) keys like an upload's event."""
    import asyncpg

    marks = dict(first_mark or {})
    now = datetime.now(UTC)
    rows = []
    for i in range(n):
        user = f"{prefix}{i % users}"
        mark = marks.get(user, 0) + 1
        marks[user] = mark
        payload: dict[str, Any] = {"watermark": {"from": mark - 1, "to": mark}}
        if keys:
            day = (EPOCH + timedelta(days=(i // users) % days)).date().isoformat()
            payload["keys"] = [{"metric": "steps", "date": day}, {"metric": "heart_rate", "date": day}]
        rows.append((user, "health.samples.changed", json.dumps(payload), f"bench-{perf()}-{i}", "pending", 0,
                     now, now, now))

    async def run() -> None:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            await conn.copy_records_to_table(
                "outbox_events", records=rows,
                columns=["user_id", "type", "payload", "event_hash", "status", "attempts", "next_attempt_at",
                         "created_at", "updated_at"])
            await conn.executemany(
                "INSERT INTO user_watermarks (user_id, watermark, updated_at) VALUES ($1, $2, now())"
                " ON CONFLICT (user_id) DO UPDATE SET watermark = excluded.watermark", list(marks.items()))
        finally:
            await conn.close()

    await trio_asyncio.aio_as_trio(run)()
    return marks


def pipeline_config(batch: int | None = None) -> ProjectionConfig:
    """The pipeline with a 0.5 s poll; ``batch`` None: the production batch sizes."""
    dispatcher, handler = DispatcherConfig(poll_interval=0.5), HandlerConfig(poll_interval=0.5)
    if batch is not None:
        dispatcher = replace(dispatcher, batch=batch, in_flight=max(batch, dispatcher.in_flight))
        handler = replace(handler, batch=batch)
    return ProjectionConfig(dispatcher=dispatcher, handler=handler, figures_interval=3600.0)


async def run_until(domain: ProjectionDomain, done: Any, timeout: float) -> float:
    """Start the pipeline; seconds until ``done()`` holds."""
    tree = Supervisor("root", children=[domain.subtree()])
    async with ActorSystem.start(tree) as system:
        t0 = perf()
        with trio.fail_after(timeout):
            while not done():  # noqa: ASYNC110  (polling the pipeline's counters)
                await trio.sleep(0.005)
        elapsed = perf() - t0
        await system.stop()
    return elapsed


# --- parts -------------------------------------------------------------------------------------------------
async def outbox_rate(url: str, dsn: str, n: int) -> dict[str, Any]:
    await seed_events(dsn, n, 400)
    async with open_store(url, config=StoreConfig()) as store:
        domain = ProjectionDomain(store, pipeline_config(), projections=[NoOp()])
        gate = domain.gates["noop"]
        elapsed = await run_until(domain, lambda: gate.completed >= n, timeout=300)
    # The floor: the same number of events, claimed and completed by bare SQL.
    await seed_events(dsn, n, 400, first_mark={f"u{u}": 10**9 for u in range(400)})
    import asyncpg

    async def raw() -> float:
        conn = await asyncpg.connect(dsn)
        try:
            t0 = perf()
            while True:
                status = await conn.execute(
                    "WITH due AS (SELECT id FROM outbox_events WHERE status = 'pending' AND next_attempt_at <= now()"
                    " ORDER BY next_attempt_at, id LIMIT 500 FOR UPDATE SKIP LOCKED)"
                    " UPDATE outbox_events SET status = 'completed', updated_at = now()"
                    " WHERE id IN (SELECT id FROM due)")
                if status.endswith(" 0"):
                    return perf() - t0
        finally:
            await conn.close()

    raw_s = await trio_asyncio.aio_as_trio(raw)()
    return {"outbox_events_per_s": round(n / elapsed), "raw_claim_complete_per_s": round(n / raw_s),
            "outbox_vs_raw": round(raw_s / elapsed, 3), "outbox_events": n}


def procrastinate_rate(dsn: str, n: int) -> dict[str, Any]:
    out = subprocess.run([PY, str(ROOT / "bench" / "_procrastinate_load.py"), dsn, str(n), "10"], cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"procrastinate run failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def day_samples(user: int, day: int, rng: random.Random) -> list[SampleIn]:
    """A day of a user's watch: 96 quarter-hour step counts and 96 heart rates, plus a phone's steps over the
    same hours (overlap: counted once)."""
    start = EPOCH + timedelta(days=day)
    rows = []
    for q in range(96):
        at = start + timedelta(minutes=15 * q)
        end = at + timedelta(minutes=15)
        rows.append(SampleIn("watch", f"s{day}-{q}", "steps", float(rng.randint(0, 400)), "count", at, end))
        rows.append(SampleIn("watch", f"h{day}-{q}", "heart_rate", float(rng.randint(50, 120)), "bpm", at, at))
        if q % 4 == 0:
            rows.append(SampleIn("phone", f"p{day}-{q}", "steps", float(rng.randint(0, 1500)), "count", at,
                                 at + timedelta(hours=1)))
    return rows


async def projected_rate(url: str, dsn: str, users: int, days: int) -> dict[str, Any]:
    rng = random.Random(7)
    total = 0
    async with open_store(url, config=StoreConfig()) as store:
        for u in range(users):
            rows = [r for d in range(days) for r in day_samples(u, d, rng)]
            total += len(rows)
            async with store.transaction() as tx:
                await tx.commit(tx.samples.upsert_many(f"p{u}", rows))
        await seed_events(dsn, users * days, users, prefix="p", keys=True, days=days)
        domain = ProjectionDomain(store, pipeline_config(batch=200), projections=default_projections())
        gates = [domain.gates[p.name] for p in domain.projections]
        events = users * days
        elapsed = await run_until(domain, lambda: all(g.completed >= events for g in gates), timeout=600)
        # The floor: reading the same samples back, one statement per user and metric.
        t0 = perf()
        for u in range(users):
            await pg(dsn, "SELECT source_id, start_at, end_at, value FROM health_samples WHERE user_id = $1"
                          " AND metric = 'steps' AND deleted_at IS NULL", f"p{u}", fetch=True)
            await pg(dsn, "SELECT source_id, start_at, end_at, value FROM health_samples WHERE user_id = $1"
                          " AND metric = 'heart_rate' AND deleted_at IS NULL", f"p{u}", fetch=True)
        raw_s = perf() - t0
    return {"projected_samples_per_s": round(total / elapsed), "projected_samples": total,
            "raw_sample_read_per_s": round(total / raw_s), "projection_events": events}


async def visible_latency(url: str, rate: float, seconds: float, users: int, warmup: float = 1.0
                          ) -> dict[str, Any]:
    """``seconds`` of load measured after ``warmup`` seconds of the same load that are not: the pipeline's pool
    connections prepare their statements and the database's pages warm up (and after a CHECKPOINT, each page's
    first change writes its full image to the WAL), which on this machine put the first quarter second's p99 at
    100-140 ms against 20-45 after it."""
    seen = Visibility()
    async with open_store(url, config=StoreConfig()) as store:
        domain = ProjectionDomain(store, pipeline_config(batch=200), publisher=seen,
                                  projections=default_projections())
        tree = Supervisor("root", children=[domain.subtree()])
        async with ActorSystem.start(tree) as system:
            await trio.sleep(0.5)  # let the pipeline settle (initial claims)
            # The commits come from another process, as a web process's uploads do.
            done = await trio.run_process([PY, str(ROOT / "bench" / "_outbox_producer.py"), url, str(rate),
                                           str(warmup + seconds), str(users)], capture_stdout=True, cwd=ROOT)
            produced = json.loads(done.stdout.decode().strip().splitlines()[-1])
            everything = [(str(u), int(m), float(t)) for u, m, t in produced["commits"]]
            start = min((t for *_, t in everything), default=0.0)
            committed = [c for c in everything if c[2] >= start + warmup]
            with trio.move_on_after(30):
                while not _all_seen(committed, seen):  # noqa: ASYNC110  (polling what the workers saw)
                    await trio.sleep(0.01)
            await system.stop()
    lat = []
    for user, mark, at in committed:
        when = next((t for m, t in seen.seen.get(user, ()) if m >= mark), None)
        if when is not None:
            lat.append((when - at) * 1000)
    return {"visible_p50_ms": _r(pct(lat, 50)), "visible_p99_ms": _r(pct(lat, 99)),
            "visible_events": len(committed), "visible_rate_achieved": round(produced["rate"]),
            "visible_missing": len(committed) - len(lat)}


def _all_seen(committed: list[tuple[str, int, float]], seen: Visibility) -> bool:
    best: dict[str, int] = {}
    for user, marks in seen.seen.items():
        best[user] = max(m for m, _ in marks)
    return all(best.get(user, 0) >= mark for user, mark, _ in committed)


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def hot_isolation(url: str, dsn: str, requests: int, backlog_users: int, backlog_days: int,
                  rounds: int = 3) -> dict[str, Any]:
    """Alternating rounds on one web process and one worker process: an idle run (no backlog: the worker has
    nothing to do), then a busy run while the worker projects a fresh backlog. The figures are the medians of
    the rounds' p50/p99 (a single p99 over a few hundred requests is a handful of samples: one run's ratio
    moved from 1.46 to 1.91 with nothing changed)."""
    web_port, worker_port = free_port(), free_port()
    idle_p50: list[float] = []
    idle_p99: list[float] = []
    busy_p50: list[float] = []
    busy_p99: list[float] = []
    left: list[int] = []
    with tempfile.TemporaryDirectory() as tmp:
        web_log, worker_log = Path(tmp) / "web.log", Path(tmp) / "worker.log"
        web_cmd = [PY, str(ROOT / "run.py"), "serve", "--role", "web", "--port", str(web_port), "--database", url]
        worker_cmd = [PY, str(ROOT / "run.py"), "serve", "--role", "worker", "--port", str(worker_port),
                      "--database", url]
        with server(web_cmd, web_port, web_log), server(worker_cmd, worker_port, worker_log):
            for r in range(rounds):
                trio.run(_drained, dsn, 120.0)
                # The last round's churn vacuumed now, not by autovacuum during the idle run.
                trio.run(_vacuum, dsn)
                idle = load(hot_config(web_port, f"idle{r}", requests, 60.0))
                # A backlog that keeps the worker busy recomputing real read models for the whole run (8 events
                # per user-day: a quiet machine drains 4 before the run ends).
                trio.run(_backlog, dsn, backlog_users, backlog_days)
                time.sleep(1.0)
                busy = load(hot_config(web_port, f"busy{r}", requests, 60.0))
                left.append(trio.run(_pending, dsn))
                if idle.get("p99_ms") and busy.get("p99_ms"):
                    idle_p50.append(idle["p50_ms"])
                    idle_p99.append(idle["p99_ms"])
                    busy_p50.append(busy["p50_ms"])
                    busy_p99.append(busy["p99_ms"])
    idle99, busy99 = _median(idle_p99), _median(busy_p99)
    return {"hot_p50_idle_ms": _median(idle_p50), "hot_p99_idle_ms": idle99,
            "hot_p50_projecting_ms": _median(busy_p50), "hot_p99_projecting_ms": busy99,
            "hot_p99_ratio": round(busy99 / idle99, 3) if idle99 and busy99 else None,
            "hot_p99_idle_rounds_ms": idle_p99, "hot_p99_projecting_rounds_ms": busy_p99,
            "backlog_left_after": left}


def _median(values: list[float]) -> float | None:
    return round(sorted(values)[len(values) // 2], 3) if values else None


async def _drained(dsn: str, timeout: float) -> None:
    """Wait (up to ``timeout``) until the worker has nothing left: no undispatched event, no unfinished
    checkpoint."""
    with trio.move_on_after(timeout):
        while await _pending(dsn) or await _unfinished(dsn):  # noqa: ASYNC110  (another process's work)
            await trio.sleep(0.5)


async def _vacuum(dsn: str) -> None:
    async with trio_asyncio.open_loop():
        await pg(dsn, "VACUUM ANALYZE")


async def _unfinished(dsn: str) -> int:
    async with trio_asyncio.open_loop():
        rows = await pg(dsn, "SELECT count(*) AS n FROM projection_checkpoints"
                             " WHERE status IN ('pending', 'processing')", fetch=True)
        return int(rows[0]["n"])


async def _backlog(dsn: str, users: int, days: int) -> None:
    """Due events for ``users`` continuing each user's watermark where it stands: a jump would leave a gap
    below the events, and their ranges would wait (and be rewritten) until it filled, which it never does."""
    async with trio_asyncio.open_loop():
        rows = await pg(dsn, "SELECT user_id, watermark FROM user_watermarks WHERE user_id = ANY($1::text[])",
                        [f"p{u}" for u in range(users)], fetch=True)
        await seed_events(dsn, users * days * 8, users, prefix="p", keys=True, days=days,
                          first_mark={r["user_id"]: int(r["watermark"]) for r in rows})


async def _pending(dsn: str) -> int:
    async with trio_asyncio.open_loop():
        rows = await pg(dsn, "SELECT count(*) AS n FROM outbox_events WHERE status = 'pending'", fetch=True)
        return int(rows[0]["n"])


# --- driver ------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller counts (a smoke run)")
    args = parser.parse_args()
    quick = args.quick
    # The pipeline runs in this process: with the garbage collector tuned as ``run.py serve`` tunes it (start-up's
    # heap frozen out of collections, young objects collected less often). Untuned, each full collection walked
    # that heap for ~60-75 ms, a pause every few seconds that landed in the freshness figure's tail.
    tune_gc()
    name = f"vigil_bench_outbox_{os.getpid()}"
    out: dict[str, Any] = {}

    async def setup() -> str:
        async with trio_asyncio.open_loop():
            await pg_admin_in_loop(f'CREATE DATABASE "{name}"')
            url = db_url(ADMIN_DSN, name)
            await migrate(url)
            return url

    try:
        url = trio.run(setup)
    except Exception as exc:  # noqa: BLE001 - an unreachable database is a note, not a crash
        print(f"PostgreSQL unreachable at {ADMIN_DSN}: {exc}")
        print(json.dumps({"outbox_events_per_s": None, "procrastinate_jobs_per_s": None, "visible_p99_ms": None,
                          "projected_samples_per_s": None, "hot_p99_idle_ms": None,
                          "hot_p99_projecting_ms": None}))
        return
    dsn = url
    try:
        n = 10_000 if quick else 60_000

        async def in_loop(fn: Any, *a: Any) -> Any:
            async with trio_asyncio.open_loop():
                return await fn(*a)

        out.update(trio.run(in_loop, outbox_rate, url, dsn, n))
        print(f"outbox: {out['outbox_events_per_s']:,} events/s through the pipeline (no-op handler), raw SQL "
              f"claim+complete {out['raw_claim_complete_per_s']:,}/s ({out['outbox_vs_raw']}x)  "
              f"[target >= 20,000/s]")
        proc = procrastinate_rate(dsn, n // 4)
        out["procrastinate_jobs_per_s"] = round(proc["jobs_per_s"])
        out["procrastinate_defer_per_s"] = round(proc["defer_per_s"])
        out["vigil_vs_procrastinate"] = round(out["outbox_events_per_s"] / proc["jobs_per_s"], 1)
        print(f"procrastinate: {out['procrastinate_jobs_per_s']:,} jobs/s run (deferred at "
              f"{out['procrastinate_defer_per_s']:,}/s); Vigil {out['vigil_vs_procrastinate']}x  [target >= 10x]")
        out.update(trio.run(in_loop, projected_rate, url, dsn, 40 if quick else 200, 7 if quick else 14))
        print(f"projections: {out['projected_samples_per_s']:,} samples/s recomputed into rollups and nights "
              f"({out['projected_samples']:,} samples, {out['projection_events']:,} events); raw read "
              f"{out['raw_sample_read_per_s']:,}/s")
        # Its own fresh database, after a CHECKPOINT: the bulk loads above leave autovacuum and dirty pages behind
        # them, which are not this figure's subject (measured among them, the p99 doubled to tripled).
        fresh = f"{name}_visible"

        async def visible(seconds: float) -> dict[str, Any]:
            async with trio_asyncio.open_loop():
                await pg_admin_in_loop(f'CREATE DATABASE "{fresh}"')
                try:
                    fresh_url = db_url(ADMIN_DSN, fresh)
                    await migrate(fresh_url)
                    await pg_admin_in_loop("CHECKPOINT")
                    return await visible_latency(fresh_url, 1000.0, seconds, 200)
                finally:
                    await pg_admin_in_loop(f'DROP DATABASE IF EXISTS "{fresh}" WITH (FORCE)')

        out.update(trio.run(visible, 3.0 if quick else 8.0))
        print(f"visible: p50 {out['visible_p50_ms']} ms, p99 {out['visible_p99_ms']} ms at "
              f"{out['visible_rate_achieved']:,} events/s ({out['visible_events']:,} events, "
              f"{out['visible_missing']} not seen)  [target p99 <= 50 ms]")
        out.update(hot_isolation(url, dsn, 150 if quick else 400, 40 if quick else 200, 7 if quick else 14))
        print(f"hot lane: p99 {out['hot_p99_idle_ms']} ms idle, {out['hot_p99_projecting_ms']} ms while a worker "
              f"projects ({out['hot_p99_ratio']}x; medians of rounds {out['hot_p99_idle_rounds_ms']} / "
              f"{out['hot_p99_projecting_rounds_ms']}; backlog left {out['backlog_left_after']})  [target <= 1.5x]")
    finally:
        trio.run(pg_admin, ADMIN_DSN, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(json.dumps(out))


async def pg_admin_in_loop(sql: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(ADMIN_DSN, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    await trio_asyncio.aio_as_trio(run)()


if __name__ == "__main__":
    main()
