"""Shared fixtures of the ingestion tests (unit, integration, acceptance).

* ``running_app``: the whole application in-process — a temp SQLite store, the real supervision
  tree (``actors.supervisor.application``) started with ``ActorSystem.start`` inside
  ``trio_asyncio.open_loop()``, and ``create_app`` over it, exactly as ``run.py serve`` wires them.
* ``running_server``: ``python run.py serve`` as a subprocess on a free port, for httpx over a socket.
* body builders (``sample``, ``signed``), and read-only peeks into the SQLite file (``Db``) so that
  tests can check what is durable without going through the code under test.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio_asyncio

from actors.accounts import Account, AccountsConfig
from actors.ingest import IngestConfig, payload_hash
from actors.maintenance import MaintenanceConfig
from actors.projection import (
    DispatcherConfig,
    HandlerConfig,
    ProjectionConfig,
    ReaperConfig,
    SessionReaperConfig,
)
from actors.supervisor import Application, Services, TreeConfig, application
from actors.sync import SyncConfig
from kernel import ActorSystem, ChildSpec, Supervisor
from storage import Store, StoreConfig, open_store
from storage.coordination import RateLimiter
from transport import Settings, VigilApp, create_app, issue_token

REPO = Path(__file__).resolve().parents[1]
SECRET = "ingest-test-jwt-secret-" + "0123456789abcdef" * 3
OPS_TOKEN = "ingest-test-ops-token-" + "0123456789abcdef" * 2
SETTINGS = Settings(jwt_secret=SECRET, ops_token=OPS_TOKEN)
BATCH = "/v1/health/samples/batch-upsert"
SAMPLES = "/v1/health/samples"
USER_SETTINGS = "/v1/users/me/settings"
ERROR_KEYS = {"code", "message", "retryable", "retryAfterMs", "requestId", "details"}


# -- bodies -------------------------------------------------------------------------------------------
def headers(user: str = "alice", **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(SECRET, user)}", **extra}


def sample(record: str = "r1", *, metric: str = "heart_rate", value: Any = 61.0, unit: str = "bpm",
           start: str = "2026-11-24T08:00:00Z", end: str | None = None, source: str = "apple-watch-1",
           metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"sourceId": source, "sourceRecordId": record, "metric": metric, "value": value, "unit": unit,
            "startAt": start, "endAt": end or start, "metadata": metadata or {}}


def deletion(record: str, *, start: str = "2026-11-24T08:00:00Z", source: str = "apple-watch-1") -> dict[str, Any]:
    return {"sourceId": source, "sourceRecordId": record, "startAt": start}


def signed(samples: list[dict[str, Any]] | None = None, *, lane: str = "hot", request_id: str | None = None,
           deletions: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    """A batch-upsert body with a correct payloadHash (over everything but payloadHash)."""
    body: dict[str, Any] = {"requestId": request_id or str(uuid.uuid4()), "lane": lane,
                            "samples": samples if samples is not None else [sample()]}
    if deletions is not None:
        body["deletions"] = deletions
    body.update(extra)
    body["payloadHash"] = payload_hash(body)
    return body


def error_of(status: int, body: Any, code: str, expected_status: int) -> dict[str, Any]:
    """Assert the API.md error shape; returns the ``error`` member."""
    assert status == expected_status, body
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == ERROR_KEYS, err
    assert err["code"] == code, err
    assert isinstance(err["message"], str) and err["message"]
    return err  # type: ignore[no-any-return]


# -- a read-only look at the SQLite file ----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Db:
    path: Path

    def rows(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5)
        conn.row_factory = sqlite3.Row
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def scalar(self, sql: str, *args: Any) -> Any:
        rows = self.rows(sql, *args)
        return rows[0][0] if rows else None

    def samples(self, user: str, *, live: bool = True) -> list[sqlite3.Row]:
        where = " AND deleted_at IS NULL" if live else ""
        return self.rows(f"SELECT * FROM health_samples WHERE user_id = ?{where} ORDER BY id", user)

    def sample_count(self, user: str | None = None) -> int:
        """Rows that are samples, deleted or not: a tombstone (metric '') is the identity of one
        deleted before it arrived, no sample."""
        if user is None:
            return int(self.scalar("SELECT count(*) FROM health_samples WHERE metric <> ''"))
        return int(self.scalar("SELECT count(*) FROM health_samples WHERE user_id = ? AND metric <> ''", user))

    def watermark(self, user: str) -> int:
        return int(self.scalar("SELECT watermark FROM user_watermarks WHERE user_id = ?", user) or 0)

    def events(self, user: str, type_: str = "health.samples.changed") -> list[dict[str, Any]]:
        return [json.loads(r["payload"]) for r in self.rows(
            "SELECT payload FROM outbox_events WHERE user_id = ? AND type = ? ORDER BY id", user, type_)]

    def request(self, user: str, request_id: str) -> sqlite3.Row | None:
        rows = self.rows("SELECT * FROM ingest_requests WHERE user_id = ? AND request_id = ?", user, request_id)
        return rows[0] if rows else None


# -- the application in-process ---------------------------------------------------------------------------
def fast_tree_config(*, tree: Mapping[str, Any] | None = None, **ingest: Any) -> TreeConfig:
    """The default tree with some ``IngestConfig`` fields (and ``TreeConfig`` fields) replaced."""
    return TreeConfig(ingest=replace(IngestConfig(), **ingest), **(tree or {}))


# Under MockClock(autojump_threshold=0) virtual time jumps to the next deadline whenever every task
# waits, including while they wait for the SQLite thread: one slow fsync can carry the clock to any
# finite deadline. So under the mock clock asks never time out (FOREVER), and periodic timers (which
# must be finite) are so far away (FAR) that firing one changes nothing a test looks at.
FOREVER = math.inf
FAR = 1e12


def mock_clock_projection_config() -> ProjectionConfig:
    """The read side with no timer a test would notice: work moves on commits (the dispatcher's wake-ups) and
    the handed-over leases, never on a poll, a timeout or a reaper."""
    return ProjectionConfig(dispatcher=DispatcherConfig(poll_interval=None, max_hold=None, lease_seconds=3600.0),
                            handler=HandlerConfig(poll_interval=None, timeout=FOREVER, lease_seconds=3600.0),
                            reaper=ReaperConfig(interval=None), reader_idle_timeout=FAR, ask_timeout=FOREVER,
                            figures_interval=None, session_reaper=SessionReaperConfig(interval=None))


def mock_clock_maintenance_config() -> MaintenanceConfig:
    """The retention reapers only when asked (``MaintenanceService.reap_now``)."""
    base = MaintenanceConfig()
    return replace(base, ask_timeout=FOREVER, **{job.name: replace(job, interval=None) for job in base.jobs})


def mock_clock_tree_config(**ingest: Any) -> TreeConfig:
    ingest = {"ask_timeout": FOREVER, "reap_interval": FAR, **ingest}
    return fast_tree_config(tree={"telemetry_interval": FAR, "accounts": AccountsConfig(idle_timeout=FAR,
                                                                                         ask_timeout=FOREVER),
                                  "projection": mock_clock_projection_config(),
                                  # Under autojump a wait for SQLite's thread moves trio's clock: no ask may time out.
                                  "sync": SyncConfig(ask_timeout=FOREVER, device_idle_timeout=FAR),
                                  "maintenance": mock_clock_maintenance_config()},
                            **ingest)


def build_application(store: Store, config: TreeConfig,
                      lane_stores: Mapping[str, Store] | None = None, **options: Any) -> Application:
    """``application(store, config, **options)``, optionally giving some lanes a different store (a gated
    wrapper) — the only way to block exactly one lane while the others share the real store."""
    app = application(store, config, **options)
    if not lane_stores:
        return app
    root = app.tree
    children: list[ChildSpec | Supervisor] = []
    for child in root.children:
        if isinstance(child, Supervisor) and child.name == "ingest":
            lanes = [replace(c, kwargs={**c.kwargs, "store": lane_stores[c.name]})
                     if isinstance(c, ChildSpec) and c.name in lane_stores else c for c in child.children]
            child = replace(child, children=lanes)
        children.append(child)
    assert any(isinstance(c, ChildSpec) and c.factory is Account for c in children)
    return replace(app, tree=replace(root, children=children))


@dataclass
class Harness:
    app: VigilApp
    system: ActorSystem
    store: Store
    db: Db
    services: Services

    @property
    def client(self) -> Any:
        return self.app.test_client()

    async def post(self, body: Any, *, user: str = "alice", raw: bytes | None = None,
                   extra_headers: Mapping[str, str] | None = None) -> tuple[int, Any, Any]:
        """POST a batch; returns (status, json body, headers)."""
        hdrs = {**headers(user), "Content-Type": "application/json", **(extra_headers or {})}
        data = raw if raw is not None else json.dumps(body).encode()
        response = await self.client.post(BATCH, data=data, headers=hdrs)
        return response.status_code, await response.get_json(), response.headers

    async def get(self, path: str, *, user: str = "alice", **params: Any) -> tuple[int, Any]:
        response = await self.client.get(path, headers=headers(user), query_string=params)
        return response.status_code, await response.get_json()

    async def put_settings(self, user: str = "alice", **settings: Any) -> tuple[int, Any]:
        response = await self.client.put(USER_SETTINGS, headers=headers(user), json=settings)
        return response.status_code, await response.get_json()


@asynccontextmanager
async def running_app(tmp_path: Path, *, config: TreeConfig | None = None,
                      store_config: StoreConfig | None = None,
                      lane_stores: Callable[[Store], Mapping[str, Store]] | None = None,
                      settings: Settings = SETTINGS, asyncio_loop: bool = True,
                      rate_limiter: RateLimiter | None = None, **options: Any) -> AsyncIterator[Harness]:
    """``options`` go to ``actors.supervisor.application`` (role, publisher, projections); ``rate_limiter``
    turns on ``settings``' rate limits."""
    db_path = tmp_path / "v.db"
    async with _maybe_loop(asyncio_loop), open_store(f"sqlite:///{db_path}", config=store_config) as store:
        parts = build_application(store, config or fast_tree_config(),
                                  lane_stores(store) if lane_stores else None, **options)
        async with ActorSystem.start(parts.tree, seed=1) as system:
            services = parts.services(system)
            app = create_app(settings, system=system, services=services, rate_limiter=rate_limiter)
            yield Harness(app=app, system=system, store=store, db=Db(db_path), services=services)


@asynccontextmanager
async def _maybe_loop(enabled: bool) -> AsyncIterator[None]:
    if enabled:
        async with trio_asyncio.open_loop():
            yield
    else:
        yield


# -- the real server in a subprocess ------------------------------------------------------------------------
STARTUP_DEADLINE = 30.0
EXIT_DEADLINE = 30.0


@dataclass(frozen=True, slots=True)
class Server:
    port: int
    process: trio.Process
    log: Path
    db: Db

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    async def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        with trio.move_on_after(EXIT_DEADLINE):
            return await self.process.wait()
        pytest.fail(f"server did not exit within {EXIT_DEADLINE} s of SIGTERM; log:\n{self.log_text()}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    env.update(VIGIL_JWT_SECRET=SECRET, VIGIL_OPS_TOKEN=OPS_TOKEN, PYTHONUNBUFFERED="1",
               # Tests of other things send many requests from one IP; the rate-limit tests set their own.
               VIGIL_RATE_LIMIT_USER_PER_MIN="0", VIGIL_RATE_LIMIT_IP_PER_MIN="0")
    return env


@asynccontextmanager
async def running_server(tmp_path: Path, *extra: str, own_group: bool = False,
                         env: Mapping[str, str] | None = None) -> AsyncIterator[Server]:
    """``run.py serve`` on a temp SQLite file; ``own_group``: in a new session (process group), as a
    service manager starts it, so a test can signal the whole group; ``env`` adds or overrides variables."""
    port = free_port()
    db_path = tmp_path / "v.db"
    log_path = tmp_path / "server.log"
    argv = [sys.executable, "run.py", "serve", "--port", str(port), "--database", f"sqlite:///{db_path}", *extra]
    with log_path.open("wb") as log:
        process = await trio.lowlevel.open_process(argv, cwd=REPO, env={**server_env(), **(env or {})}, stdout=log,
                                                   stderr=subprocess.STDOUT, start_new_session=own_group)
    server = Server(port, process, log_path, Db(db_path))
    try:
        await _wait_until_healthy(server)
        yield server
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _wait_until_healthy(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.base) as client:
        with trio.move_on_after(STARTUP_DEADLINE):
            while server.process.returncode is None:
                try:
                    if (await client.get("/health")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await trio.sleep(0.05)
    pytest.fail(f"server not healthy (exit code {server.process.returncode}); log:\n{server.log_text()}")
