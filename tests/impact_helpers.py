"""Consumption sessions for the session read model tests, written through the storage layer the way an applied
sync change commits them (issue 12 contract): the entity in ``sync_entities``, its change-log entry and ONE
``sync.entity.changed`` outbox event, in one transaction.

This stands in for the sync domain's apply path (``SyncService.apply_server_change``) until it is merged;
``put_session`` has its signature, so the stale-session reaper's tests inject it as the ``EndSession``.
"""

from __future__ import annotations

from typing import Any

from actors.projection import SESSION, SYNC_ENTITY_CHANGED, SessionImpacts, UserWork
from storage import ChangeIn, InvalidData, Json, Store, SyncEntity, Transaction


async def put_entity(store: Store, user_id: str, entity_type: str, entity_id: str, data: Json, *,
                     deleted: bool = False, device_id: str | None = None) -> SyncEntity:
    """Create, update or (``deleted``) delete the entity at the next version, with its change and event."""
    async with store.transaction() as tx:
        (current,) = await tx.run(tx.entities.get(user_id, entity_type, entity_id))
        version = 1 if current is None else current.version + 1
        op = "delete" if deleted else "create" if current is None else "update"
        (stored,) = await tx.run(tx.entities.put(SyncEntity(user_id, entity_type, entity_id, version, data, deleted),
                                                 expected_version=0 if current is None else current.version))
        await tx.commit(
            tx.changes.append_many(user_id, [ChangeIn(entity_type, entity_id, op, version, data, deleted, device_id)]),
            tx.outbox.enqueue(user_id, SYNC_ENTITY_CHANGED,
                              {"entityType": entity_type, "entityId": entity_id, "version": version, "op": op,
                               "deleted": deleted, "deviceId": device_id, "data": data}))
    return stored


async def apply_server_change(store: Store, user_id: str, entity_type: str, entity_id: str, data: Json) -> None:
    """What ``SyncService.apply_server_change`` does, as far as these tests need (no device)."""
    await put_entity(store, user_id, entity_type, entity_id, data)


async def put_session(store: Store, user_id: str, session_id: str, *, status: str = "ended",
                      start: str | None = "2026-11-24T10:00:00Z", end: str | None = "2026-11-24T11:00:00Z",
                      product: str | None = None, deleted: bool = False, **extra: Any) -> SyncEntity:
    data: dict[str, Any] = {"status": status, "count": 1, **extra}
    for key, value in (("startAt", start), ("endAt", end), ("productId", product)):
        if value is not None:
            data[key] = value
    return await put_entity(store, user_id, SESSION, session_id, data, deleted=deleted)


__all__ = ["apply_server_change", "put_entity", "put_session"]


class PoisonedSessionImpacts(SessionImpacts):
    """Session impact that refuses every event as bad data: its checkpoints die at once, so the session read
    models are never fresh."""

    __slots__ = ()

    async def project_many(self, tx: Transaction, works: Any) -> None:
        raise InvalidData("data", "a poison session")

    async def project(self, tx: Transaction, work: UserWork) -> None:
        await self.project_many(tx, [work])
