"""``DeviceSync``: one keyed actor per (user, device), started on its first message and passivated when idle.

It serializes its device's pushes and pulls in this process (the mailbox: it waits for each unit of work) and
hands each one to the committer (group commit), whose transaction takes the (user, device) advisory lock that
serializes the device across processes on PostgreSQL. It holds nothing but its key and config,
so an idle one costs only its passivated cell. The domain's refusals (a bad cursor, an unknown conflict) are
answers, not crashes: the facade raises them.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import trio

from kernel import Actor
from storage import Store, Transaction

from . import _apply
from ._committer import LOCKED_ELSEWHERE, Unit
from ._errors import ConflictResolved, InvalidResolution, InvalidSyncCursor, UnknownConflict
from ._messages import ListConflicts, Pull, Push, Resolve, ServerWrite
from ._policy import Policies


class DeviceSync(Actor):
    def __init__(self, key: tuple[str, str], *, store: Store, policies: Policies, committers: tuple[str, ...],
                 timeout: float) -> None:
        self._user, self._device = key
        self._store = store
        self._policies = policies
        # The user's committer (its path): one user's units share a batch rather than contend across batches.
        self._committer = committers[zlib.crc32(self._user.encode()) % len(committers)]
        self._timeout = timeout

    async def _script(self, build: Callable[[Transaction], Any], *, device_lock: bool = True) -> Any:
        unit = Unit(user_id=self._user, device_id=self._device if device_lock and self._device else None,
                    build=build)
        committer = self.system.ref(self._committer)
        deadline = trio.current_time() + self._timeout
        delay = 0.002
        while True:
            answer = await committer.ask(unit, timeout=max(0.0, deadline - trio.current_time()))
            if answer is not LOCKED_ELSEWHERE:
                return answer
            # Another process is writing this device: try again once it is likely done.
            await trio.sleep(delay * self.system.jitter())
            delay = min(delay * 2, 0.1)

    async def receive(self, msg: Any) -> Any:
        user, device = self._user, self._device
        match msg:
            case Push(ops=ops, correlation_id=correlation):
                return await self._script(lambda tx: _apply.push(tx, user, device, ops, correlation, self._policies))
            case ServerWrite():
                return await self._script(lambda tx: _apply.server_change(tx, user, msg), device_lock=False)
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
