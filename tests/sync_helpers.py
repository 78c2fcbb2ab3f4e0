"""Helpers of the sync tests: a device that pushes and pulls over HTTP (Quart's test client or httpx)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors.supervisor import TreeConfig, application
from kernel import ActorSystem
from storage import Store
from tests.ingest_helpers import SETTINGS, Db, Harness, fast_tree_config, headers
from transport import create_app

PUSH = "/v1/sync/push"
PULL = "/v1/sync/pull"
CONFLICTS = "/v1/sync/conflicts"


def op(entity_type: str, entity_id: str, kind: str = "create", base: int = 0, data: Any = None, *,
       op_id: str | None = None, at: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"clientSyncOperationId": op_id or str(uuid.uuid4()), "entityType": entity_type,
                            "entityId": entity_id, "op": kind, "baseVersion": base}
    if data is not None:
        body["data"] = data
    if at is not None:
        body["clientTimestamp"] = at
    return body


@dataclass
class Device:
    """One user's device over an app's test client (``client``: ``app.test_client()``)."""

    client: Any
    user: str = "alice"
    device: str = "phone"
    cursor: str | None = None
    seen: list[dict[str, Any]] = field(default_factory=list)

    def headers(self) -> dict[str, str]:
        return {**headers(self.user), "X-Device-ID": self.device}

    async def push_raw(self, operations: list[dict[str, Any]]) -> tuple[int, Any]:
        response = await self.client.post(PUSH, json={"operations": operations}, headers=self.headers())
        return response.status_code, await response.get_json()

    async def push(self, *operations: dict[str, Any]) -> list[dict[str, Any]]:
        status, body = await self.push_raw(list(operations))
        assert status == 200, body
        return list(body["results"])

    async def pull_raw(self, cursor: str | None = None, limit: int | None = None) -> tuple[int, Any]:
        params: dict[str, Any] = {}
        if cursor is not None:
            params["cursor"] = cursor
        if limit is not None:
            params["limit"] = limit
        response = await self.client.get(PULL, headers=self.headers(), query_string=params)
        return response.status_code, await response.get_json()

    async def pull_all(self, limit: int = 500) -> list[dict[str, Any]]:
        """Pull until ``hasMore`` is false from the device's cursor; returns (and remembers) the changes."""
        got: list[dict[str, Any]] = []
        while True:
            status, body = await self.pull_raw(self.cursor, limit)
            assert status == 200, body
            got += body["changes"]
            self.cursor = body["nextCursor"]
            if not body["hasMore"]:
                break
        self.seen += got
        return got

    async def conflicts(self) -> list[dict[str, Any]]:
        response = await self.client.get(CONFLICTS, headers=self.headers())
        assert response.status_code == 200, await response.get_json()
        return list((await response.get_json())["items"])

    async def resolve(self, conflict_id: str, resolution: str, data: Any = None) -> tuple[int, Any]:
        body: dict[str, Any] = {"resolution": resolution}
        if data is not None:
            body["data"] = data
        response = await self.client.post(f"{CONFLICTS}/{conflict_id}/resolve", json=body, headers=self.headers())
        return response.status_code, await response.get_json()


@asynccontextmanager
async def app_over(store: Store, config: TreeConfig | None = None) -> AsyncIterator[Harness]:
    """One "server process" over ``store`` (which may be shared with others, e.g. one PostgreSQL schema):
    its own supervision tree, actors and HTTP app. The caller runs inside ``trio_asyncio.open_loop()``."""
    parts = application(store, config or fast_tree_config())
    async with ActorSystem.start(parts.tree, seed=1) as system:
        services = parts.services(system)
        app = create_app(SETTINGS, system=system, services=services)
        yield Harness(app=app, system=system, store=store, db=Db(Path("/nonexistent")), services=services)
        await system.stop()
