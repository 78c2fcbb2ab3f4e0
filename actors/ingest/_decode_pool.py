"""Worker processes, at low CPU priority, for the CPU-bound part of backfill (decoding uploads).

Parsing, validating, hashing and preparing a 500-sample upload is ~4 ms of pure Python that holds
the GIL. In the server process it competes with everything else that needs the GIL — the SQLite
writer thread between its statements, other requests, the lanes resuming — so the server stays on
one core however many it has. A :class:`DecodePool` runs such jobs in worker processes
(trio-parallel, spawned: no fork of a process with threads); only their results — plain data,
~50 KB pickled for 500 prepared samples — come back.

The workers run at a lower OS priority (``nice``): backfill uses the cores nobody else wants, and
the moment the server's own threads (a foreground request, the database writer) need a core, the
kernel's scheduler gives it to them. Foreground uploads are small and decoded in the server itself.
At most ``processes`` jobs are admitted at once, and each waits for its turn (the caller's
``wait_turn``) after admission and right before it starts, so a burst of backfill cannot queue
dozens of jobs that all passed their turn before a foreground request arrived.

Errors: a job's own exception is re-raised here (ours pickle: the ingest errors, InvalidData). A
worker that dies mid-job (OOM killer, a segfault) raises :class:`DecodePoolBroken` — retryable: the
next job gets a fresh worker.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import trio
import trio_parallel

T = TypeVar("T")
log = logging.getLogger("vigil.ingest")

# The server and its workers allocate many short-lived objects per request (parsed bodies,
# pydantic models) over a large, long-lived heap (modules, actors): with CPython's default
# thresholds, full collections walk that heap many times a second under load.
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """Collect young objects less often, and leave what start-up built out of every collection."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def default_processes() -> int:
    """One worker per core this process may use, at most four: beyond that the single database
    writer is the limit."""
    return max(1, min(4, len(os.sched_getaffinity(0))))


class DecodePoolBroken(Exception):
    """A worker process died while running a job (the job may be retried)."""


# Added to the workers' nice value: the server's threads win every contended core.
BACKGROUND_NICENESS = 10
# Seconds a worker gets to exit when the pool closes before it is killed. By then the server has drained
# and its lanes have stopped, so no job is running: an idle worker exits in milliseconds, and one still
# spawning (a server stopped right after it started) holds nothing worth waiting for. The shutdown
# budget's closing reserve is small (a fifth of it, at most 5 s).
CLOSE_GRACE = 1.0


def _worker_init() -> None:
    # A SIGTERM to the whole process group (systemd's default, tini -g) is the server's to handle:
    # it drains, then closes the pool, which ends the workers. Killed first, they would fail the
    # drain's last backfill jobs and the pool's orderly close.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.nice(BACKGROUND_NICENESS)
    # Import what the jobs use before the first job, then freeze it out of the collector.
    import actors.ingest._upload  # noqa: F401  (the upload decoder's module and its models)

    tune_gc()


def _hold_worker(seconds: float) -> None:
    import time

    time.sleep(seconds)  # keeps this worker busy, so the next warm-up job starts another


class DecodePool:
    """Run picklable functions in low-priority worker processes; see the module docstring."""

    def __init__(self, context: trio_parallel.WorkerContext, processes: int) -> None:
        self.processes = processes
        self._context = context
        self._admitted = trio.CapacityLimiter(processes)
        # Admission above is the bound; trio-parallel's own default limiter is process-wide.
        self._unbounded = trio.CapacityLimiter(math.inf)
        self._warmed = trio.Event()

    async def run(self, fn: Callable[..., T], *args: Any,
                  wait_turn: Callable[[], Awaitable[None]] | None = None) -> T:
        """``fn(*args)`` in a worker, once admitted and (if given) after ``await wait_turn()``.
        Not cancellable once started (jobs are milliseconds)."""
        async with self._admitted:
            if wait_turn is not None:
                await wait_turn()
            try:
                result: T = await self._context.run_sync(fn, *args, limiter=self._unbounded)
                return result
            except trio_parallel.BrokenWorkerError as exc:
                raise DecodePoolBroken(f"a worker process died: {exc}") from exc

    async def warm_up(self) -> None:
        """Start every worker now (spawning and importing takes about a second each), so the first
        requests after start-up do not pay for it."""
        try:
            async with trio.open_nursery() as nursery:
                for _ in range(self.processes):
                    nursery.start_soon(self.run, _hold_worker, 0.05)
        finally:
            self._warmed.set()  # also when it failed: nobody waits for workers that will not come

    async def ready(self) -> None:
        """Return once the warm-up has ended (see ``open_decode_pool``'s ``warm_in_background``)."""
        await self._warmed.wait()


@asynccontextmanager
async def open_decode_pool(processes: int, *, warm_in_background: bool = False) -> AsyncIterator[DecodePool | None]:
    """A pool of ``processes`` workers, warmed up, shut down on exit; ``None`` for 0 (run jobs in
    the server process). ``warm_in_background``: yield at once and start the workers beside the
    caller's own start-up (a server opening its store meanwhile); ``await pool.ready()`` before taking
    traffic. A server must not listen before: a job that waits for a worker to spawn cannot be
    cancelled, so a SIGTERM then would wait for the spawn (seconds on a loaded machine) and overrun
    the shutdown budget."""
    if processes < 0:
        raise ValueError(f"processes must be >= 0, got {processes}")
    if processes == 0:
        yield None
        return
    body_failed = False
    try:
        async with trio_parallel.open_worker_context(idle_timeout=math.inf, init=_worker_init,
                                                     grace_period=CLOSE_GRACE) as context, trio.open_nursery() as nursery:
            pool = DecodePool(context, processes)
            if warm_in_background:
                nursery.start_soon(_warm_and_log, pool)
            else:
                await pool.warm_up()
            try:
                yield pool
            except BaseException:
                body_failed = True
                raise
            finally:
                nursery.cancel_scope.cancel()  # a warm-up still running is not needed any more
    except trio_parallel.BrokenWorkerError as exc:
        if body_failed:
            raise
        # Workers killed from outside (OOM killer, kill -9) by the time the pool closes: they hold
        # nothing of ours, so shutdown goes on.
        log.warning("worker processes had died by the time the pool closed", exc_info=exc)


async def _warm_and_log(pool: DecodePool) -> None:
    started = trio.current_time()
    try:
        await pool.warm_up()
    except* DecodePoolBroken as exc:
        # A worker died while starting: most likely the process group's SIGTERM reached it before its
        # init ignored SIGTERM (a server stopped right after it started). Warming is only a head start;
        # the next job spawns a fresh worker.
        log.warning("a decode worker died while warming up",
                    extra={"fields": {"errors": [str(e) for e in exc.exceptions]}})
    else:
        log.info("decode workers ready", extra={"fields": {
            "processes": pool.processes, "seconds": round(trio.current_time() - started, 3)}})


__all__ = ["BACKGROUND_NICENESS", "GC_THRESHOLDS", "DecodePool", "DecodePoolBroken", "default_processes",
           "open_decode_pool", "tune_gc"]
