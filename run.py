"""Vigil's one entry point.

    python run.py serve [--role all|web|worker] [--host H] [--port P] [--database URL] [--redis URL]
                        [--tree MODULE:FUNCTION]
    python run.py token --user USER [--ttl SECONDS]
    python run.py migrate [--database URL]
    python run.py backup [--database URL]
    python run.py restore KEY [--database URL]
    python run.py --version

With no arguments it serves (as ``make run``). The single binary (``make binary`` → ``dist/vigil``, see
deploy/) is this module frozen: ``vigil serve|token|migrate|--version`` are the same commands.

Configuration comes from ``VIGIL_*`` environment variables (see ``transport.Settings``); flags win.
Exit codes: 0 success (including a signalled shutdown), 1 runtime failure, 2 configuration error.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any

if __name__ == "__main__":
    # In the frozen binary a decode worker is this executable started again by multiprocessing's spawn:
    # this turns that start into the worker (it never returns there), before the imports below. Elsewhere
    # it does nothing.
    multiprocessing.freeze_support()

# A decode worker started by spawn from the venv imports this script as ``__mp_main__`` before its first
# job. It needs nothing of the server: skipping these imports (~1.3 s) is most of a worker's start, and
# the server waits for its workers before it listens.
if __name__ != "__mp_main__":
    import hypercorn.trio
    import trio
    import trio_asyncio
    from hypercorn.config import Config as HypercornConfig

    from actors.ai import AiConfig
    from actors.exports import (
        BackupError,
        Bucket,
        ExportsConfig,
        Progress,
        S3Config,
        backup_database,
        restore_database,
    )
    from actors.ingest import default_processes, open_decode_pool, tune_gc
    from actors.realtime import RealtimeConfig
    from actors.supervisor import ROLES, Services, TreeConfig, application
    from kernel import ANTHROPIC, REDIS, S3, ActorSystem, Breakers, Supervisor, SupervisorGaveUp
    from storage import StoreError, open_store
    from storage.coordination import Coordination, CoordinationConfig, leases_with_fallback, open_coordination
    from transport import (
        ConfigError,
        Dependencies,
        HealthRegistry,
        Settings,
        ShutdownBudget,
        begin_drain,
        configure_logging,
        coordination_check,
        create_app,
        issue_token,
        store_check,
    )

log = logging.getLogger("vigil.run")

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2

TreeFactory = Callable[["Settings"], "Supervisor"]  # strings: a decode worker skips the imports above


# -- the root supervision tree -----------------------------------------------------------------------
# THE SEAM between the server and the application's actors: the full application over the store
# (``actors.supervisor.application``), unless ``--tree`` names a test tree (which gets no store).
def resolve_tree_factory(spec: str | None) -> TreeFactory | None:
    """``--tree MODULE:FUNCTION`` (a ``Settings -> Supervisor`` callable; tests use it to run a tree
    with known behaviour), else None: the whole application."""
    if not spec:
        return None
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"--tree takes MODULE:FUNCTION, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"--tree {spec}: {exc}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError(f"--tree {spec}: {module_name} has no callable {attr!r}")
    return factory  # type: ignore[no-any-return]


def ai_config(settings: Settings) -> AiConfig:
    """The AI domain's configuration from ``VIGIL_ANTHROPIC_*`` (unset model: the domain's default)."""
    base = AiConfig()
    return AiConfig(api_key=settings.anthropic_api_key, base_url=settings.anthropic_base_url,
                    model=settings.anthropic_model or base.model)


# -- serve -------------------------------------------------------------------------------------------
class _AnnounceBinds:
    """hypercorn's task_status: log the bound addresses once the sockets listen."""

    def started(self, binds: Any = None) -> None:
        log.info("listening", extra={"fields": {"binds": binds}})


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def hypercorn_config(settings: Settings) -> HypercornConfig:
    config = HypercornConfig()
    config.bind = [_bind(settings.host, settings.port)]
    config.accesslog = None  # transport writes one structured line per request itself
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = ShutdownBudget.split(settings.shutdown_timeout, settings.drain_timeout).drain
    config.include_server_header = False
    return config


# The binary's bootloader (PyInstaller one-file: a parent process that runs this one) forwards every signal
# it gets, so a signal sent to the whole process group (systemd's default, `kill -- -PGID`) arrives twice,
# moments apart. A repeat within this window is that one request, not an operator's second one.
REPEAT_WINDOW_S = 0.5


class _Shutdown:
    """When shutdown began, and the watchdog that ends the process if the budget overruns."""

    def __init__(self, budget: ShutdownBudget) -> None:
        self.budget = budget
        self.requested = trio.Event()
        self.began_at: float | None = None
        self._watchdog: threading.Timer | None = None

    def begin(self) -> None:
        self.began_at = trio.current_time()
        self.requested.set()
        # A thread, not a trio task: it must fire even if a phase blocks the event loop or hangs in a shield.
        self._watchdog = threading.Timer(self.budget.watchdog, _overrun, args=(self.budget.total,))
        self._watchdog.daemon = True
        self._watchdog.start()

    def elapsed(self) -> float:
        return 0.0 if self.began_at is None else trio.current_time() - self.began_at

    def done(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()


def _overrun(total: float) -> None:
    log.critical("shutdown overran its budget; exiting now", extra={"fields": {"budgetSeconds": total}})
    logging.shutdown()
    os._exit(EXIT_FAILURE)


async def _watch_signals(signals: Any, app: Any, shutdown: _Shutdown, force: trio.CancelScope) -> None:
    """First SIGTERM/SIGINT: drain gracefully. A second one (not a repeat, see REPEAT_WINDOW_S): stop
    waiting for in-flight requests."""
    async for signum in signals:
        if not shutdown.requested.is_set():
            log.info("shutdown requested", extra={"fields": {"signal": signal.Signals(signum).name,
                                                             "budgetSeconds": shutdown.budget.total}})
            begin_drain(app)  # /health turns 503 and telemetry streams close before the listener does
            shutdown.begin()
        elif shutdown.elapsed() < REPEAT_WINDOW_S:
            log.info("the same signal again (delivered twice); already draining",
                     extra={"fields": {"signal": signal.Signals(signum).name}})
        else:
            log.warning("second signal: cutting the HTTP drain short",
                        extra={"fields": {"signal": signal.Signals(signum).name}})
            force.cancel()


async def _stop_actors(system: ActorSystem, shutdown: _Shutdown) -> None:
    """Lanes commit what they accepted, outbox work finishes, reapers release their leases: within what the drain
    left of the budget; past it, the system is cancelled (what was not committed was never acknowledged)."""
    allowed = shutdown.budget.for_actors(shutdown.elapsed())
    with trio.move_on_after(allowed) as scope:
        await system.stop()
    if scope.cancelled_caught:
        log.warning("actors did not stop within the shutdown budget; cancelling them",
                    extra={"fields": {"allowedSeconds": round(allowed, 3)}})


def _redis_up(coordination: Coordination) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return (await coordination.health()).ok

    return probe


def _late_signal(signum: int, frame: Any) -> None:
    log.info("signal after the server stopped listening for them; already stopping",
             extra={"fields": {"signal": signal.Signals(signum).name}})


async def serve(settings: Settings, tree_factory: TreeFactory | None) -> int:
    """Run until SIGTERM/SIGINT (→ EXIT_OK) or until the root supervisor gives up (→ EXIT_FAILURE).

    A signal starts the shutdown budget (``transport.ShutdownBudget``): drain HTTP, stop the actors, close the
    pools, all within ``settings.shutdown_timeout``."""
    shutdown = _Shutdown(ShutdownBudget.split(settings.shutdown_timeout, settings.drain_timeout))
    # What the receiver below restores when it closes: a repeat arriving after it (see REPEAT_WINDOW_S), or
    # still pending in it, must not kill a process that is already on its way out.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _late_signal)
    # Catch the signals before anything starts, so one that arrives during startup still drains.
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        # One asyncio loop around everything: asyncpg and redis run through trio_asyncio.
        async with trio_asyncio.open_loop(), AsyncExitStack() as stack:
            health = HealthRegistry()
            # One breaker and retry policy per dependency, shared by storage, coordination and transport.
            breakers = Breakers()
            # Uploads' parsing and preparation run in worker processes, beside the GIL-bound server. They
            # spawn while the store opens and the actors start (about a second each, most of a start-up).
            processes = settings.decode_processes
            decode_pool = await stack.enter_async_context(
                open_decode_pool(default_processes() if processes is None else processes, warm_in_background=True))
            coordination: Coordination | None = None
            dependencies = Dependencies()
            if tree_factory is not None:
                tree, application_parts = tree_factory(settings), None
            else:
                # SQLite migrates itself on open; PostgreSQL needs `run.py migrate` first.
                store = await stack.enter_async_context(open_store(settings.database_url, breakers=breakers))
                # Redis is optional: without it, rate limits, leases and pub/sub stay in-process.
                coordination = await stack.enter_async_context(
                    open_coordination(settings.redis_url, config=CoordinationConfig(), dependency=breakers[REDIS]))
                health.add_check("database", store_check(store))
                health.add_check("coordination", coordination_check(coordination), critical=False)
                # What /metrics exports for the alerts (deploy/prometheus/alerts.yml): pool use, Redis up.
                dependencies = Dependencies(pool_stats=store.pool_stats,
                                            redis_up=_redis_up(coordination) if settings.redis_url else None)
                # Realtime envelopes cross processes over the same Redis (the bridge retries while it is down).
                application_parts = application(
                    store, TreeConfig(realtime=RealtimeConfig(redis_url=settings.redis_url), ai=ai_config(settings),
                                      exports=ExportsConfig(s3=_s3_config())), role=settings.role,
                    # Reapers are single instances across processes; a Redis outage must not change who holds one.
                    leases=leases_with_fallback(coordination.leases, store), s3_breaker=breakers[S3].breaker,
                    ai_breaker=breakers[ANTHROPIC].breaker, redis=breakers[REDIS])
                tree = application_parts.tree
            try:
                async with ActorSystem.start(tree) as system:
                    breakers.publish_to(system.telemetry)  # transitions stream on /v1/ops/telemetry
                    services: Services | None = None
                    if application_parts is not None:
                        services = application_parts.services(system, decode_pool=decode_pool)
                    app = create_app(settings, system=system, services=services, health=health,
                                     dependencies=dependencies, breakers=breakers,
                                     rate_limiter=coordination.limiter if coordination is not None else None)
                    force = trio.CancelScope()
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(_watch_signals, signals, app, shutdown, force)
                        with force:
                            if decode_pool is not None:
                                # Listening with the workers still spawning would leave the first cold
                                # uploads, and a SIGTERM then, waiting for them (see open_decode_pool).
                                await decode_pool.ready()
                            # Returns once the trigger fired, the listener closed and requests drained.
                            await hypercorn.trio.serve(app, hypercorn_config(settings),
                                                       shutdown_trigger=shutdown.requested.wait,
                                                       task_status=_AnnounceBinds())
                        nursery.cancel_scope.cancel()
                    log.info("HTTP drained; stopping the actor system",
                             extra={"fields": {"elapsedSeconds": round(shutdown.elapsed(), 3)}})
                    await _stop_actors(system, shutdown)
            except SupervisorGaveUp as exc:
                # The kernel already cancelled the server; there is nothing left to serve with.
                log.critical("the root supervisor gave up; exiting", exc_info=exc)
                shutdown.done()
                return EXIT_FAILURE
    shutdown.done()
    log.info("stopped", extra={"fields": {"elapsedSeconds": round(shutdown.elapsed(), 3)}})
    return EXIT_OK


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    configure_logging(settings.log_level)
    tune_gc()
    tree_factory = resolve_tree_factory(args.tree)
    if settings.role == "worker" and settings.worker_nice:
        # Background work yields the CPU to web processes on the same machine (the OS scheduler's job, as the
        # ingest lanes' priority is within one process); it still takes every cycle nobody else wants.
        os.nice(settings.worker_nice)
    log.info("starting", extra={"fields": {"settings": repr(settings)}})
    return trio.run(serve, settings, tree_factory)


# -- token -------------------------------------------------------------------------------------------
def cmd_token(settings: Settings, args: argparse.Namespace) -> int:
    try:
        token = issue_token(settings.jwt_secret, args.user, ttl_seconds=args.ttl)
    except ValueError as exc:
        print(f"vigil: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if "jwt_secret" in settings.dev_defaults_in_use:
        print("vigil: note: signed with the development secret (set VIGIL_JWT_SECRET)", file=sys.stderr)
    print(token)
    return EXIT_OK


# -- migrate -----------------------------------------------------------------------------------------
def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    configure_logging(settings.log_level)
    from storage import migrate

    async def run() -> list[int]:
        async with trio_asyncio.open_loop():
            return await migrate(settings.database_url)

    try:
        applied = trio.run(run)
    except StoreError as exc:
        print(f"vigil: migration failed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    log.info("migrated", extra={"fields": {"applied": applied}})
    return EXIT_OK


# -- backup / restore --------------------------------------------------------------------------------
def _s3_config() -> S3Config | None:
    try:
        return S3Config.from_env(os.environ)
    except ValueError as exc:
        raise ConfigError(f"VIGIL_S3_*: {exc}") from None


def _transfer(settings: Settings, verb: str, run: Callable[[Bucket, Progress], Awaitable[Any]]) -> int:
    """Run a backup or restore against the configured bucket, with progress on a terminal (stderr) and
    JSON log lines otherwise."""
    configure_logging(settings.log_level)
    s3 = _s3_config()
    if s3 is None:
        raise ConfigError("set VIGIL_S3_BUCKET, VIGIL_S3_ACCESS_KEY_ID and VIGIL_S3_SECRET_ACCESS_KEY "
                          "(and VIGIL_S3_ENDPOINT_URL for a non-AWS store)")

    async def main() -> Any:
        async with trio_asyncio.open_loop():
            progress = Progress(verb, stream=sys.stderr, terminal=sys.stderr.isatty())
            try:
                return await run(Bucket(s3), progress)
            except Exception as exc:  # returned, not raised: the loop's nursery would wrap it in a group
                return exc

    result = trio.run(main)
    if isinstance(result, BackupError | StoreError):
        print(f"vigil: {verb} failed: {result}", file=sys.stderr)
        return EXIT_FAILURE
    if isinstance(result, Exception):  # boto3/botocore: the bucket could not be reached or refused us
        print(f"vigil: {verb} failed: {type(result).__name__}: {result}", file=sys.stderr)
        return EXIT_FAILURE
    log.info(f"{verb} completed", extra={"fields": {
        "key": result.key, "backend": result.backend, "schemaVersion": result.schema_version,
        "bytes": result.bytes, "seconds": round(result.seconds, 3)}})
    print(result.key)
    return EXIT_OK


def cmd_backup(settings: Settings, args: argparse.Namespace) -> int:
    return _transfer(settings, "backup", lambda bucket, progress: backup_database(
        settings.database_url, bucket, now=datetime.now(UTC), progress=progress))


def cmd_restore(settings: Settings, args: argparse.Namespace) -> int:
    return _transfer(settings, "restore", lambda bucket, progress: restore_database(
        settings.database_url, args.key, bucket, progress=progress))


# -- command line ------------------------------------------------------------------------------------
def version() -> str:
    """The installed distribution's version (the binary carries its metadata)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("vigil")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    # prog: argv[0]'s name, so `run.py` in a checkout and `vigil` as the binary.
    parser = argparse.ArgumentParser(description="Vigil: health-data sync on supervised actors")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the HTTP/WebSocket server and the actor system")
    p.add_argument("--host", help="listen address (VIGIL_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (VIGIL_PORT, default 8000)")
    p.add_argument("--database", dest="database_url", help="database URL (VIGIL_DATABASE_URL)")
    p.add_argument("--redis", dest="redis_url", help="Redis URL (VIGIL_REDIS_URL)")
    p.add_argument("--tree", help="root tree factory MODULE:FUNCTION (default actors.supervisor:root_tree)")
    p.add_argument("--decode-processes", dest="decode_processes", type=int,
                   help="worker processes decoding uploads, 0 for none (VIGIL_DECODE_PROCESSES, default one per "
                        "core, at most 4)")
    p.add_argument("--role", choices=ROLES,
                   help="what this process runs (VIGIL_ROLE, default all): web serves HTTP and WebSocket, worker "
                        "runs the outbox dispatcher, projections and reapers (its HTTP port serves only /health, "
                        "/metrics and the operators' endpoints)")
    p.set_defaults(func=cmd_serve,
                   overrides=("host", "port", "database_url", "redis_url", "decode_processes", "role"))

    p = sub.add_parser("token", help="print a user JWT for local use, signed with the configured secret")
    p.add_argument("--user", required=True, help="the user id (the token's sub claim)")
    p.add_argument("--ttl", type=int, default=24 * 3600, help="lifetime in seconds (default 86400)")
    p.set_defaults(func=cmd_token, overrides=())

    p = sub.add_parser("migrate", help="bring the database schema up to date")
    p.add_argument("--database", dest="database_url", help="database URL (VIGIL_DATABASE_URL)")
    p.set_defaults(func=cmd_migrate, overrides=("database_url",))

    p = sub.add_parser("backup", help="write a consistent backup of the database to the VIGIL_S3_* bucket; "
                                      "prints its key")
    p.add_argument("--database", dest="database_url", help="database URL (VIGIL_DATABASE_URL)")
    p.set_defaults(func=cmd_backup, overrides=("database_url",))

    p = sub.add_parser("restore", help="restore a backup KEY from the VIGIL_S3_* bucket into an empty database")
    p.add_argument("key", help="the backup's key, as `run.py backup` printed it")
    p.add_argument("--database", dest="database_url", help="database URL (VIGIL_DATABASE_URL)")
    p.set_defaults(func=cmd_restore, overrides=("database_url",))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The one entry point of ``run.py`` and of the binary. No arguments: ``serve`` with its defaults."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv or ["serve"])
    try:
        settings = Settings.from_env(os.environ, **{name: getattr(args, name) for name in args.overrides})
        return int(args.func(settings, args))
    except ConfigError as exc:
        print(f"vigil: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
