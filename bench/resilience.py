"""Resilience benchmarks: what the breakers and the retry helper cost, and how fast the service comes back.

    .venv/bin/python bench/resilience.py [--quick]

Figures, each next to its limit measured in the same run:

- ``breaker_closed_overhead_us``: per call, ``async with breaker.guard()`` around a no-op minus the same loop
  around a bare no-op (best of several interleaved rounds). Target <= 5 us.
- ``breaker_open_reject_us``: per call, an open breaker refusing (``CircuitOpen`` raised and caught). Target
  well under a millisecond (<= 100 us here).
- ``ingest_breaker_ratio``: samples/s committed through the real ingest path in process (role ``web``:
  ``IngestService.accept_upload``: decode, lane, group commit on PostgreSQL) with the postgres breaker and
  the store's retries in the path, over the same without the breaker and with a single attempt; rounds
  interleaved ABBA (the tables grow as rounds go); the median of the pairs' ratios (best of each beside it).
  Target >= 0.95.
- ``recovery_after_open_s``: a throwaway PostgreSQL is stopped under a steady trickle of uploads, the breaker
  opens; it is started again; the time from when both PostgreSQL is up and the breaker's open period is over
  to the first 200. Target <= 5 s. (``pg_up_to_first_200_s`` is the raw time from PostgreSQL back up.)

Every PostgreSQL figure runs on a cluster of the bench's own (initdb on a free port, fsync off), never on the
shared server. The machine's cores are shared with other work: figures are noisy. The last line printed is
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import trio
import trio_asyncio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.ingest import IngestService  # noqa: E402
from actors.supervisor import application  # noqa: E402
from kernel import (  # noqa: E402
    POSTGRES,
    ActorSystem,
    Breakers,
    BreakersConfig,
    CircuitBreaker,
    CircuitOpen,
    DependencyPolicy,
    RetryPolicy,
    seeds_breaker,
)
from storage import StoreConfig, StoreUnavailable, open_store  # noqa: E402
from tests.ingest_helpers import fast_tree_config, sample, signed  # noqa: E402
from tests.resilience_helpers import PrivatePostgres, private_postgres  # noqa: E402

perf = time.perf_counter


def verdict(ok: bool, target: str) -> str:
    return f"{'ok' if ok else 'MISSED'}: {target}"


# -- the breaker alone -------------------------------------------------------------------------------------
class _Nothing:
    """The limit: an async context manager that does nothing."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


async def _closed_overhead(calls: int, rounds: int) -> tuple[float, float]:
    """(guard, allow + record) per call, less the bare async context manager; minimum over short rounds
    (on a shared machine the minimum is the figure least disturbed by others' work)."""
    breaker = CircuitBreaker("bench", seeds_breaker(call_timeout=5.0))
    nothing = _Nothing()
    bare, guarded, direct = [], [], []
    now = trio.current_time
    for _ in range(rounds):
        started = perf()
        for _ in range(calls):
            async with nothing:
                pass
        bare.append(perf() - started)
        started = perf()
        for _ in range(calls):
            async with breaker.guard():
                pass
        guarded.append(perf() - started)
        started = perf()
        for _ in range(calls):
            async with nothing:
                breaker.allow()
                breaker.record(failed=False, started=now())
        direct.append(perf() - started)
    return (min(guarded) - min(bare)) / calls * 1e6, (min(direct) - min(bare)) / calls * 1e6


async def _open_reject(calls: int, rounds: int) -> float:
    breaker = CircuitBreaker("bench", seeds_breaker(call_timeout=5.0))
    for _ in range(5):
        breaker.allow()
        breaker.record_failure()
    best = float("inf")
    for _ in range(rounds):
        started = perf()
        for _ in range(calls):
            try:
                async with breaker.guard():
                    pass
            except CircuitOpen:
                pass
        best = min(best, perf() - started)
    return best / calls * 1e6


# -- ingest through the real path ---------------------------------------------------------------------------
@asynccontextmanager
async def _ingest(dsn: str, breakers: Breakers | None, store_config: StoreConfig) -> AsyncIterator[IngestService]:
    async with open_store(dsn, config=store_config, breakers=breakers) as store:
        # role "web": no outbox dispatch or projections in the measured process (earlier rounds' backlog would
        # compete with the ingest being measured)
        parts = application(store, fast_tree_config(), role="web")
        async with ActorSystem.start(parts.tree, seed=1) as system:
            yield parts.services(system).ingest


def _bodies(tag: str, users: int, per_user: int, size: int) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    for u in range(users):
        user = f"{tag}-u{u}"
        out[user] = [json.dumps(signed([sample(f"{user}-{b}-{i}", start=f"2026-11-{1 + i % 28:02d}T08:{b % 60:02d}:00Z",
                                              value=50.0 + i % 40) for i in range(size)], lane="cold")).encode()
                     for b in range(per_user)]
    return out


async def _throughput(dsn: str, tag: str, with_breaker: bool, users: int, per_user: int, size: int) -> float:
    bodies = _bodies(tag, users, per_user, size)
    breakers = Breakers(seed=1) if with_breaker else None
    config = StoreConfig() if with_breaker else StoreConfig(retry=RetryPolicy(attempts=1))
    async with _ingest(dsn, breakers, config) as ingest:
        async def one(user: str) -> None:
            for raw in bodies[user]:
                await ingest.accept_upload(user, raw)

        started = perf()
        async with trio.open_nursery() as nursery:
            for user in bodies:
                nursery.start_soon(one, user)
        return users * per_user * size / (perf() - started)


# -- PostgreSQL back up -> first 200 -------------------------------------------------------------------------
async def _recovery(pg: PrivatePostgres, open_for: float) -> dict[str, float]:
    breakers = Breakers(BreakersConfig(postgres=DependencyPolicy(
        breaker=replace(seeds_breaker(call_timeout=5.0), open_for=open_for))), seed=1)
    bodies = iter(_bodies("recovery", 1, 100_000, 5)["recovery-u0"])
    async with _ingest(pg.dsn, breakers, StoreConfig()) as ingest:
        breaker = breakers[POSTGRES].breaker

        async def post() -> bool:
            try:
                await ingest.accept_upload("recovery-u0", next(bodies))
            except StoreUnavailable:
                return False
            return True

        for _ in range(5):
            assert await post()
        await trio.to_thread.run_sync(pg.stop)
        while breaker.seconds_open() == 0:
            await post()
            await trio.sleep(0.02)
        await trio.sleep(1.0)
        await trio.to_thread.run_sync(pg.start)
        up = perf()
        ready_at = up + breaker.seconds_open()  # the open period may still run when PostgreSQL is back
        while not await post():  # noqa: ASYNC110 - retrying an upload until PostgreSQL answers, as a client would
            await trio.sleep(0.05)
        first = perf()
    return {"pg_up_to_first_200_s": round(first - up, 3), "recovery_after_open_s": round(first - max(up, ready_at), 3)}


async def main(quick: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    calls, rounds = (2_000, 10) if quick else (5_000, 40)
    guard, direct = await _closed_overhead(calls, rounds)
    out["breaker_closed_overhead_us"] = round(guard, 3)
    out["breaker_closed_allow_record_us"] = round(direct, 3)
    print(f"breaker closed overhead per call: guard() {guard:.3f} us, allow()+record() (storage, Redis) "
          f"{direct:.3f} us  [{verdict(guard <= 5.0, '<= 5 us')}]")
    out["breaker_open_reject_us"] = round(await _open_reject(calls, rounds), 3)
    print(f"open breaker reject: {out['breaker_open_reject_us']:.3f} us per call  "
          f"[{verdict(out['breaker_open_reject_us'] <= 100.0, '<= 100 us')}]")

    users, per_user, size = (4, 5, 200) if quick else (8, 12, 500)
    pairs = 2 if quick else 5
    with private_postgres() as pg:
        async with trio_asyncio.open_loop():
            with_b, without = [], []
            for n in range(pairs):  # ABBA: the tables grow, so neither side always runs on the larger one
                for with_breaker in ((False, True) if n % 2 == 0 else (True, False)):
                    rate = await _throughput(pg.dsn, f"{with_breaker}{n}", with_breaker, users, per_user, size)
                    (with_b if with_breaker else without).append(rate)
                print(f"  pair {n + 1}: without {without[-1]:,.0f} samples/s, with breaker+retry "
                      f"{with_b[-1]:,.0f} samples/s")
            out["ingest_with_breaker_samples_per_s"] = round(max(with_b))
            out["ingest_without_samples_per_s"] = round(max(without))
            # The median of the pairs' ratios: one stall of the shared cores moves a best-of a lot, a median less.
            ratios = sorted(b / a for a, b in zip(without, with_b, strict=True))
            out["ingest_breaker_ratio_pairs"] = [round(x, 3) for x in ratios]
            out["ingest_breaker_ratio"] = round(ratios[len(ratios) // 2] if len(ratios) % 2 else
                                                (ratios[len(ratios) // 2 - 1] + ratios[len(ratios) // 2]) / 2, 3)
            out["ingest_breaker_best_ratio"] = round(max(with_b) / max(without), 3)
            print(f"ingest with breaker+retry / without: median pair {out['ingest_breaker_ratio']:.3f}, best of "
                  f"each {out['ingest_breaker_best_ratio']:.3f}  [{verdict(out['ingest_breaker_ratio'] >= 0.95, '>= 0.95')}]")
            out.update(await _recovery(pg, open_for=3.0 if quick else 5.0))
            print(f"PostgreSQL back up -> first 200: {out['pg_up_to_first_200_s']:.2f} s; after the open period "
                  f"{out['recovery_after_open_s']:.2f} s  [{verdict(out['recovery_after_open_s'] <= 5.0, '<= 5 s')}]")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls and rounds (a smoke run)")
    args = parser.parse_args()
    figures = trio.run(main, args.quick)
    print(json.dumps(figures, sort_keys=True))
