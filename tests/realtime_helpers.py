"""The application served by a real hypercorn server in this process, and WebSocket clients of
``GET /v1/ws``: what the realtime tests share."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hypercorn.trio
import trio
from hypercorn.config import Config as HypercornConfig
from trio_websocket import WebSocketConnection, open_websocket_url

from actors.realtime import RealtimeConfig, RealtimeService
from storage.coordination import RateLimiter
from tests.ingest_helpers import SECRET, SETTINGS, Harness, fast_tree_config, free_port, running_app
from transport import Settings, issue_token


@dataclass(frozen=True, slots=True)
class Served:
    harness: Harness
    port: int

    @property
    def realtime(self) -> RealtimeService:
        return self.harness.services.realtime

    def url(self, query: str = "") -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws" + (f"?{query}" if query else "")


@asynccontextmanager
async def serving(tmp_path: Path, realtime: RealtimeConfig | None = None, *, settings: Settings = SETTINGS,
                  rate_limiter: RateLimiter | None = None) -> AsyncIterator[Served]:
    """The whole application (SQLite under ``tmp_path``) behind hypercorn on a free port; ``rate_limiter``
    turns on ``settings``' rate limits."""
    config = fast_tree_config(tree={"realtime": realtime or RealtimeConfig()})
    async with running_app(tmp_path, config=config, settings=settings, rate_limiter=rate_limiter) as harness, \
            trio.open_nursery() as nursery:
        port = free_port()
        hc = HypercornConfig()
        hc.bind = [f"127.0.0.1:{port}"]
        hc.accesslog = None
        hc.graceful_timeout = 1.0
        stop = trio.Event()
        await nursery.start(lambda task_status: hypercorn.trio.serve(
            harness.app, hc, shutdown_trigger=stop.wait, task_status=task_status))
        try:
            yield Served(harness, port)
        finally:
            stop.set()


def bearer(user: str) -> list[tuple[bytes, bytes]]:
    return [(b"Authorization", f"Bearer {issue_token(SECRET, user)}".encode())]


@asynccontextmanager
async def client(served: Served, user: str, *, device: str | None = None, header_device: str | None = None,
                 query_token: bool = False, **kw: Any) -> AsyncIterator[WebSocketConnection]:
    """A connected client of ``user``, registered with the hub before this returns."""
    params = [f"token={issue_token(SECRET, user)}"] if query_token else []
    if device is not None:
        params.append(f"deviceId={device}")
    headers = [] if query_token else bearer(user)
    if header_device is not None:
        headers.append((b"X-Device-ID", header_device.encode()))
    async with open_websocket_url(served.url("&".join(params)), extra_headers=headers, **kw) as ws:
        # The handler registers before it reads frames: a pong proves the connection is in its room.
        await ws.send_message('{"type":"ping"}')
        assert await next_json(ws) == {"type": "pong"}
        yield ws


async def next_json(ws: WebSocketConnection, seconds: float = 5.0) -> Any:
    with trio.fail_after(seconds):
        return json.loads(await ws.get_message())
