"""`python run.py serve` as a real process: it comes up healthy, serves the ops endpoints and the
telemetry WebSocket over a socket, and on SIGTERM drains and exits 0.

Polling the subprocess is the only waiting here, always under a bounded deadline.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from kernel import Actor, ChildSpec, Supervisor
from tests.ingest_helpers import (
    EXIT_DEADLINE,
    OPS_TOKEN,
    REPO,
    STARTUP_DEADLINE,
    Server,
    free_port,
    running_server,
)
from tests.ingest_helpers import SECRET as JWT_SECRET
from tests.ingest_helpers import server_env as _env

pytestmark = pytest.mark.slow

OPS = {"Authorization": f"Bearer {OPS_TOKEN}"}


# -- a tree with known behaviour, for `serve --tree` ----------------------------------------------------
class Flaky(Actor):
    """Crashes 0.2 s after each start, so lifecycle events keep coming while a test listens."""

    async def started(self) -> None:
        self.send_after(0.2, "crash")

    async def receive(self, msg: Any) -> None:
        if msg == "crash":
            raise RuntimeError("scheduled crash for the telemetry test")


def chatty_tree(settings: Any) -> Supervisor:
    return Supervisor("root", max_restarts=1_000_000, within=1.0, children=[ChildSpec("flaky", Flaky)])


class Doomed(Actor):
    async def started(self) -> None:
        self.send_after(0.3, "die")

    async def receive(self, msg: Any) -> None:
        raise RuntimeError("doomed")


def doomed_tree(settings: Any) -> Supervisor:
    """A root that gives up on the first crash."""
    return Supervisor("root", max_restarts=0, within=60.0, children=[ChildSpec("doomed", Doomed)])


async def _terminate(server: Server) -> int:
    server.process.send_signal(signal.SIGTERM)
    with trio.move_on_after(EXIT_DEADLINE):
        return await server.process.wait()
    pytest.fail(f"server did not exit within {EXIT_DEADLINE} s of SIGTERM; log:\n{server.log_text()}")


# -- tests -------------------------------------------------------------------------------------------
async def test_serve_answers_then_drains_on_sigterm(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        async with httpx.AsyncClient(base_url=server.base) as client:
            health = await client.get("/health", headers={"X-Request-ID": "it-1"})
            assert health.json()["status"] == "healthy"
            assert health.headers["X-Request-ID"] == "it-1"

            tree = await client.get("/v1/ops/supervision", headers=OPS)
            assert tree.status_code == 200
            assert tree.json()["path"] == "root" and tree.json()["state"] == "running"

            denied = await client.get("/v1/ops/supervision")
            assert denied.status_code == 401 and denied.json()["error"]["code"] == "UNAUTHENTICATED"

            missing = await client.get("/nope")
            assert missing.status_code == 404 and missing.json()["error"]["requestId"] == missing.headers["X-Request-ID"]

            metrics = await client.get("/metrics", headers=OPS)
            assert metrics.status_code == 200 and 'vigil_actor_running{kind="supervisor",path="root"} 1.0' in metrics.text

            spec = await client.get("/openapi.json")
            assert "/v1/ops/telemetry" in spec.json()["x-websockets"]

        assert await _terminate(server) == 0
    log = server.log_text()
    assert '"msg":"shutdown requested"' in log and '"msg":"stopped"' in log
    access = [json.loads(line) for line in log.splitlines() if '"logger":"vigil.access"' in line]
    assert {"method", "path", "status", "durationMs", "requestId", "userId"} <= set(access[0])


async def test_telemetry_websocket_streams_and_closes_on_shutdown(tmp_path: Path) -> None:
    async with running_server(tmp_path, "--tree", "tests.integration.test_http_server:chatty_tree") as server:
        ws_base = f"ws://127.0.0.1:{server.port}/v1/ops/telemetry"

        async with open_websocket_url(ws_base + "?token=wrong") as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
        assert closed.value.reason.code == 4401

        async with open_websocket_url(ws_base, extra_headers=[(b"Authorization", f"Bearer {OPS_TOKEN}".encode())]) as ws:
            with trio.fail_after(10):
                event = json.loads(await ws.get_message())
            assert event["path"] == "root/flaky"
            assert event["kind"] in {"started", "crashed", "restarted", "dead_letter", "stopped"}

            # SIGTERM with the stream open: the server closes it (1001) instead of waiting it out.
            server.process.send_signal(signal.SIGTERM)
            with trio.fail_after(EXIT_DEADLINE), pytest.raises(ConnectionClosed) as closed:
                while True:
                    await ws.get_message()
            assert closed.value.reason.code == 1001

        with trio.fail_after(EXIT_DEADLINE):
            assert await server.process.wait() == 0


async def test_root_giving_up_exits_1(tmp_path: Path) -> None:
    log_path = tmp_path / "server.log"
    argv = [sys.executable, "run.py", "serve", "--port", str(free_port()),
            "--tree", "tests.integration.test_http_server:doomed_tree"]
    with log_path.open("wb") as log:
        process = await trio.lowlevel.open_process(argv, cwd=REPO, env=_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        with trio.fail_after(STARTUP_DEADLINE):
            assert await process.wait() == 1
    finally:
        if process.returncode is None:
            process.kill()
    assert "the root supervisor gave up" in log_path.read_text()


async def test_token_command_prints_a_valid_jwt() -> None:
    result = await trio.run_process([sys.executable, "run.py", "token", "--user", "u-42"], cwd=REPO, env=_env(),
                                    capture_stdout=True, capture_stderr=True)
    claims = jwt.decode(result.stdout.decode().strip(), JWT_SECRET, algorithms=["HS256"])
    assert claims["sub"] == "u-42" and claims["exp"] > claims["iat"]


async def test_production_without_secrets_refuses_to_start() -> None:
    env = {k: v for k, v in _env().items() if k not in ("VIGIL_JWT_SECRET", "VIGIL_OPS_TOKEN")}
    env["VIGIL_ENV"] = "production"
    result = await trio.run_process([sys.executable, "run.py", "serve", "--port", "0"], cwd=REPO, env=env,
                                    capture_stdout=True, capture_stderr=True, check=False)
    assert result.returncode == 2
    assert b"VIGIL_JWT_SECRET must be set" in result.stderr
