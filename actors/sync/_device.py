"""``DeviceSync``: one keyed actor per (user, device), started on its first message and passivated when idle.

It serializes its device's pushes and pulls in this process (the mailbox); on PostgreSQL the push's
transaction-scoped advisory lock does the same across processes. It holds nothing but its key and config,
so an idle one costs only its passivated cell. The domain's refusals (a bad cursor, an unknown conflict) are
answers, not crashes: the facade raises them.
"""

from __future__ import annotations

from typing import Any

from kernel import Actor
from storage import Store, Transaction

from . import _apply
from ._errors import ConflictResolved, InvalidResolution, InvalidSyncCursor, UnknownConflict
from ._messages import ListConflicts, Pull, Push, Resolve, ServerWrite
from ._policy import Policies


class DeviceSync(Actor):
    def __init__(self, key: tuple[str, str], *, store: Store, policies: Policies) -> None:
        self._user, self._device = key
        self._store = store
        self._policies = policies

    async def _script(self, build: Any) -> Any:
        async def work(tx: Transaction) -> Any:
            (result,) = await tx.commit(tx.script(build(tx)))
            return result

        return await self._store.transact(work)

    async def receive(self, msg: Any) -> Any:
        user, device = self._user, self._device
        match msg:
            case Push(ops=ops, correlation_id=correlation):
                return await self._script(lambda tx: _apply.push(tx, user, device, ops, correlation, self._policies))
            case ServerWrite():
                return await self._script(lambda tx: _apply.server_change(tx, user, msg))
            case Pull(after=after, limit=limit):
                page = await self._script(lambda tx: _apply.pull(tx, user, device, after, limit, self._policies))
                if isinstance(page, str):
                    return InvalidSyncCursor(page)
                return page
            case ListConflicts(limit=limit):
                return await self._store.transact(lambda tx: tx.conflicts.list(user, status="open", limit=limit))
            case Resolve():
                origin = device or None
                done = await self._script(lambda tx: _apply.resolve(
                    tx, user, origin, msg.conflict_id, msg.resolution, msg.data, msg.correlation_id, self._policies))
                if isinstance(done, InvalidResolution):
                    return done
                if done is None:
                    return UnknownConflict(msg.conflict_id)
                if not isinstance(done, _apply.Resolved):
                    return ConflictResolved(msg.conflict_id)
                return done
        raise TypeError(f"DeviceSync cannot handle {type(msg).__name__}")


__all__ = ["DeviceSync"]
